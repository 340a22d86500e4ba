// A warm standby Redis in the standby region, fed from the mirror's archive.
//
// The feeder serves the archived replication stream to the standby Redis as its primary
// would: it listens on loopback, tells the standby `REPLICAOF` itself, and answers its PSYNC
// with +FULLRESYNC (the epoch's newest RDB snapshot, then the commands after it) or
// +CONTINUE (the commands after the standby's own offset). Redis keeps the applied offset
// itself, so a restart of either side resumes exactly where the standby is: nothing skipped,
// nothing applied twice. The standby stays read-only until promoted (REPLICAOF NO ONE).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ferry::storage {
class Archive;
}

namespace ferry::cross_region {

struct RedisStandbyOptions {
  std::string archive_path;  // the mirror's archive (read, never written)
  // A Redis source in it; empty: the one source of `sources` the archive knows as Redis
  // (found when the standby connects, so it may be mirrored later than the feeder starts).
  std::string source;
  std::vector<std::string> sources;
  std::string standby;       // "host:port" of the standby Redis
};

struct RedisStandbyStats {
  std::atomic<uint64_t> full_syncs{0};
  std::atomic<uint64_t> partial_syncs{0};
  std::atomic<uint64_t> served_offset{0};  // replication offset sent so far
  std::atomic<uint64_t> acked_offset{0};   // what the standby reported applied (REPLCONF ACK)
};

// Thread-safe. Serves one standby at a time.
class RedisStandbyFeeder {
 public:
  // Binds 127.0.0.1:<free port> now; serving and pointing the standby at it start on a
  // thread of its own. Trouble with the standby (down, refusing) is retried, and logged.
  static absl::StatusOr<std::unique_ptr<RedisStandbyFeeder>> Start(RedisStandbyOptions options);
  ~RedisStandbyFeeder();  // Stop()
  void Stop();
  int port() const { return port_; }
  const RedisStandbyStats& stats() const { return stats_; }

 private:
  explicit RedisStandbyFeeder(RedisStandbyOptions options) : options_(std::move(options)) {}
  void Run();
  absl::Status Serve(int fd);
  absl::StatusOr<std::string> ResolveSource(const storage::Archive& archive) const;
  // For log lines: the configured source, or what stands for the one found when serving.
  std::string LogName() const { return options_.source.empty() ? "(mirrored-redis)" : options_.source; }
  absl::Status PointStandbyHere();

  const RedisStandbyOptions options_;
  RedisStandbyStats stats_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace ferry::cross_region
