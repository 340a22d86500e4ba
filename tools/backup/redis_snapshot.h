// Redis RDB images as snapshots of the archive: the RdbReceiver the service gives each Redis
// source, storing every full resync's RDB (chunked and deduplicated like base backups).
#pragma once

#include <memory>
#include <string>

#include "ingest/redis/redis_source.h"
#include "storage/snapshot_store.h"

namespace ferry::tools {

inline constexpr char kRedisRdbKind[] = "redis-rdb";
inline constexpr char kRedisRdbFile[] = "dump.rdb";

// Snapshot metadata: kind = redis-rdb, class = full, epoch, replid, offset (the replication
// offset the RDB corresponds to), start_time, end_time.
class ArchiveRdbReceiver final : public ingest::redis::RdbReceiver {
 public:
  explicit ArchiveRdbReceiver(std::string snapshot_dir) : dir_(std::move(snapshot_dir)) {}

  absl::StatusOr<pipeline::SnapshotSink*> BeginRdb(uint32_t epoch, const std::string& replid,
                                                   uint64_t offset) override;
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

}  // namespace ferry::tools
