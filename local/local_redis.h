// LocalRedis: a real redis-server (Redis 7) on 127.0.0.1 and a free port, in a directory of
// its own, stopped by pid. Used by `ferry sandbox`, `ferry restore redis --start` and the
// integration tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/redis/replica_conn.h"

namespace ferry::local {

struct LocalRedisOptions {
  // Working directory (dump files, AOF directory, log). A new temp dir, removed with the
  // server, when empty.
  std::string dir;
  // Extra command-line settings, e.g. {"--repl-diskless-sync", "no"}; they come last and win.
  std::vector<std::string> args;
  int port = 0;  // 0: a free port
  // When the server requires AUTH (e.g. args disable the default user): what Command uses.
  std::string auth_user, auth_password;
};

// The destructor stops the server (SHUTDOWN NOSAVE, SIGKILL if it does not go) and removes
// a temp dir it created, unless FERRY_KEEP_TEST_DIRS=1. Not thread-safe.
class LocalRedis {
 public:
  // Starts redis-server with no persistence of its own (save "", appendonly no), DEBUG allowed
  // from loopback, then `args`. Waits until it answers PING and has loaded its data.
  // kFailedPrecondition naming the Debian package when redis-server is missing, or quoting
  // the log when the server does not come up.
  static absl::StatusOr<std::unique_ptr<LocalRedis>> Start(const LocalRedisOptions& options);

  ~LocalRedis();
  LocalRedis(const LocalRedis&) = delete;
  LocalRedis& operator=(const LocalRedis&) = delete;

  int port() const { return port_; }
  int pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  std::string Address() const;  // "127.0.0.1:port"
  // How a client reaches it (with the AUTH the options gave), for client/redis/client.h.
  client::redis::RedisEndpoint Endpoint() const;

  // Runs one command and returns its reply as text: a status or bulk string as is, an
  // integer in decimal, nil as "(nil)", an array as its elements one per line. A Redis error
  // reply is kFailedPrecondition with its message; no connection is kUnavailable.
  absl::StatusOr<std::string> Command(const std::vector<std::string>& argv) const;

  // Leaves the server running when this object goes away (for restore --start).
  void Detach() {
    pid_ = -1;
    owns_dir_ = false;
  }

  // SHUTDOWN NOSAVE and wait for the process to exit. OK when it is already gone.
  absl::Status Stop();
  // SIGKILL, like a crash.
  absl::Status Kill();

 private:
  LocalRedis() = default;
  absl::Status WaitReady(int timeout_seconds);
  std::string LogTail() const;
  std::string LogSince(uint64_t offset) const;

  std::string dir_;
  std::string log_path_;
  std::string auth_user_, auth_password_;
  uint64_t log_offset_ = 0;  // where this start's lines begin in log_path_
  bool owns_dir_ = false;
  int port_ = 0;
  int pid_ = -1;
};

// The replication offset the server's first replica (slave0) has acknowledged; kNotFound
// while there is none online (a replica still loading its RDB is listed but acks nothing).
absl::StatusOr<int64_t> ReplicaAckedOffset(const LocalRedis& redis);

// Until the server's one replica (ferry) is online and has acknowledged its whole
// replication stream: then everything written so far is durable in ferry's archive.
absl::Status WaitReplicaAcked(const LocalRedis& redis, int timeout_seconds);

// DEBUG DIGEST of the server's whole dataset (40 hex digits; all zeros when empty).
absl::StatusOr<std::string> RedisDigest(const LocalRedis& redis);

}  // namespace ferry::local
