// Redis point-in-time restore: a Redis 7 multi-part AOF directory made from the archive —
// the RDB of the newest snapshot before the target as the base, the archived commands from
// it up to the target as the incremental file — that a stock `redis-server --appendonly yes`
// loads.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "pipeline/position.h"
#include "restore/pg_restore.h"
#include "storage/snapshot_store.h"
#include "storage/stream_log.h"

namespace ferry::restore {

struct RedisTarget {
  enum class Kind { kLatest, kTime, kOffset } kind = Kind::kLatest;
  // kTime: every command ferry had archived at this instant of its own clock (a frame is
  // in when it was closed at or before it; commands carry no time of their own).
  pipeline::UnixMicros time = 0;
  uint64_t offset = 0;  // kOffset: replication offset
};

struct RedisRestorePlan {
  const storage::SnapshotManifest* snapshot = nullptr;
  uint32_t epoch = 0;
  uint64_t from = 0;  // the snapshot's offset
  uint64_t to = 0;    // the target offset (before cutting back to a transaction boundary)
  std::string description;
};

// Resolves the target to an epoch and offset of the stream and picks the newest snapshot of
// that epoch at or before it. kOutOfRange (naming the window) when the target is before the
// first snapshot or after the archive's end; kDataLoss for a hole between the snapshot and
// the target.
absl::StatusOr<RedisRestorePlan> PlanRedisRestore(const storage::StreamLog& log,
                                                  const storage::SnapshotStore& snapshots,
                                                  const RedisTarget& target);

// The restorable window of a Redis source: from the end of its oldest snapshot to the last
// archived frame (ferry's clock).
RestoreWindow RedisRestorableWindow(const storage::StreamLog& log, const storage::SnapshotStore& snapshots);

// Names of what RestoreRedisTo writes under `to`.
inline constexpr char kAofDirName[] = "appendonlydir";
inline constexpr char kAofFileName[] = "appendonly.aof";

// The whole `ferry restore redis` without starting a server: plans (all checks before
// anything is written into `to`, which must be empty or missing), then writes
// to/appendonlydir/{appendonly.aof.1.base.rdb, appendonly.aof.1.incr.aof,
// appendonly.aof.manifest}. The incremental file ends on a transaction boundary: a MULTI
// whose EXEC lies past the target is left out whole. The primary's PING and REPLCONF are
// left out. Returns a one-line summary with the offset reached.
absl::StatusOr<std::string> RestoreRedisTo(const std::string& archive_path, const std::string& source,
                                           const RedisTarget& target, const std::string& to);

}  // namespace ferry::restore
