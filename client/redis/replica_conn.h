// ReplicaConnection: one TCP connection to a Redis primary speaking the replica side of the
// replication protocol (docs/protocols.md, "Redis replication"): the handshake, PSYNC, the RDB
// transfer in both forms, then the raw command stream and REPLCONF ACKs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::client::redis {

struct RedisEndpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string user;      // ACL user; empty: AUTH with the password alone
  std::string password;  // empty: no AUTH
  int timeout_ms = 10000;  // connect, and each handshake reply
};

// "host:port" (port defaults to 6379); kInvalidArgument naming the text otherwise.
absl::StatusOr<RedisEndpoint> ParseRedisAddress(absl::string_view address);

// The primary's answer to PSYNC.
struct SyncStart {
  bool full = false;   // +FULLRESYNC: an RDB follows
  std::string replid;  // FULLRESYNC's id, or CONTINUE's new id (empty: unchanged)
  uint64_t offset = 0; // FULLRESYNC: the replication offset the RDB corresponds to
};

// Not thread-safe, except that the stop fd given to Connect may be written from any thread
// to wake a blocked read (it then fails with kCancelled).
class ReplicaConnection {
 public:
  // Connects and runs the handshake up to PSYNC: AUTH when a password is set,
  // REPLCONF listening-port 0 (ferry does not serve replicas), REPLCONF capa eof capa psync2,
  // and with rdb_only REPLCONF rdb-only 1 (the primary sends an RDB, then closes).
  // kUnavailable when the server cannot be reached, kPermissionDenied when AUTH fails.
  static absl::StatusOr<std::unique_ptr<ReplicaConnection>> Connect(const RedisEndpoint& endpoint,
                                                                    int stop_fd, bool rdb_only = false);
  ~ReplicaConnection();

  // PSYNC replid offset ("? -1" when replid is empty). Newline keepalives before the reply are
  // skipped. kUnavailable for -LOADING / -NOMASTERLINK and the like (retry later).
  absl::StatusOr<SyncStart> Psync(const std::string& replid, int64_t offset);

  // After +FULLRESYNC: reads the RDB ("$<len>\r\n" + len bytes, or diskless "$EOF:<mark>\r\n"
  // + bytes + mark), skipping keepalives while the primary prepares it, and hands its bytes
  // in order to on_bytes. Returns the RDB's size.
  absl::StatusOr<uint64_t> ReceiveRdb(const std::function<absl::Status(absl::string_view)>& on_bytes);

  // Appends to *out whatever the command stream has within timeout_ms, returning early
  // (possibly with nothing) when wake_fd becomes readable. kUnavailable when the primary
  // closed the connection or it failed; kCancelled when the stop fd was written.
  absl::Status ReadStream(std::string* out, int timeout_ms, int wake_fd);

  // Sends one command as a RESP array (REPLCONF ACK ...).
  absl::Status Send(const std::vector<std::string>& argv);

 private:
  ReplicaConnection(int fd, int stop_fd, RedisEndpoint endpoint)
      : fd_(fd), stop_fd_(stop_fd), endpoint_(std::move(endpoint)) {}
  // Reads more bytes into in_; waits at most timeout_ms (-1: forever) or until wake_fd is
  // readable. Returns false when nothing was read.
  absl::StatusOr<bool> Fill(int timeout_ms, int wake_fd = -1);
  // One "\r\n"-terminated line (without it), skipping bare "\n" keepalives.
  absl::StatusOr<std::string> ReadLine();
  absl::Status Command(const std::vector<std::string>& argv, absl::string_view what);

  int fd_;
  int stop_fd_;
  RedisEndpoint endpoint_;
  std::string in_;  // bytes received and not yet consumed
};

}  // namespace ferry::client::redis
