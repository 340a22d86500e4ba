// Redis RDB images as snapshots of the archive: the RdbReceiver the service gives each Redis
// source, storing every full resync's RDB (chunked and deduplicated like base backups).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "config/config.h"
#include "ingest/redis/redis_source.h"
#include "storage/archive.h"
#include "storage/snapshot_store.h"

namespace ferry::backup {

inline constexpr char kRedisRdbKind[] = "redis-rdb";
inline constexpr char kRedisRdbFile[] = "dump.rdb";

// Snapshot metadata: kind = redis-rdb, class = full, epoch, replid, offset (the replication
// offset the RDB corresponds to), start_time, end_time.
class ArchiveRdbReceiver final : public ingest::redis::RdbReceiver {
 public:
  explicit ArchiveRdbReceiver(std::string snapshot_dir) : dir_(std::move(snapshot_dir)) {}

  absl::StatusOr<pipeline::SnapshotSink*> BeginRdb(pipeline::StreamPosition at, const std::string& replid) override;
  absl::Status CommitRdb() override;
  void AbortRdb() override;

  // The last committed snapshot's manifest (for logs).
  const storage::SnapshotManifest& last() const { return last_; }

 private:
  const std::string dir_;
  std::unique_ptr<storage::SnapshotStore> store_;
  std::unique_ptr<storage::SnapshotWriter> writer_;
  storage::SnapshotManifest last_;
};

// Whether a scheduled snapshot is due: "full" when the newest Redis snapshot ended
// snapshot_every ago (a full resync always brings one, so there is one from the start).
absl::optional<std::string> DueRedisSnapshot(const storage::SnapshotStore& snapshots, const config::SourceConfig& source,
                                             pipeline::UnixMicros now);

// A snapshot while the command stream goes on: a second connection to the primary asks for
// an RDB only (REPLCONF rdb-only 1, PSYNC ? -1: the primary forks a BGSAVE and sends the
// RDB, then closes; it never counts the connection as a replica). The RDB is stored as a
// snapshot of the stream's epoch whose replication id it carries, at the offset it names;
// kFailedPrecondition when the primary's id is not the archived stream's (after a failover
// before the stream has caught up: the next attempt will do). `archive` may be read-only.
absl::StatusOr<storage::SnapshotManifest> TakeRedisSnapshot(storage::Archive& archive, const config::SourceConfig& source,
                                                            const std::atomic<bool>* cancel);

}  // namespace ferry::backup
