// Retention: expire snapshots by class and age, then delete WAL and packs that no kept
// snapshot needs. Never touches what a kept snapshot or the window from the oldest kept
// snapshot to the archive's end still needs (docs/design.md).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "pipeline/position.h"
#include "storage/archive.h"

namespace ferry::backup {

struct RetentionPolicy {
  absl::Duration full = absl::Hours(24 * 30);
  absl::Duration incremental = absl::Hours(24 * 7);
  absl::Duration wal = absl::Hours(72);
  absl::Duration redis_snapshots = absl::Hours(24 * 7);
};

struct RetentionResult {
  std::vector<std::string> snapshots;  // ids expired
  std::vector<std::string> files;      // WAL segment and pack files deleted
};

// For one source: a snapshot older than its limit (PostgreSQL: by class, full or
// incremental; Redis: redis_snapshots) goes, except the newest (the source must stay
// restorable). Then stream segments (WAL, Redis commands) that end before the oldest kept
// snapshot's start and arrived longer ago than `policy.wal` go (the segment being written
// never does), then packs no kept snapshot references. A source without snapshots keeps all
// of its stream (nothing could be restored without it). With dry_run nothing is deleted and the
// result lists what would be. `archive` may be opened read-only: the service passes its
// own read-only view so the streaming writer's index is never shared across threads.
absl::StatusOr<RetentionResult> ApplyRetention(storage::Archive& archive, const std::string& source,
                                               const RetentionPolicy& policy,
                                               pipeline::UnixMicros now, bool dry_run);

// The [retention] durations of a config.
RetentionPolicy PolicyOf(const config::Config& config);

}  // namespace ferry::backup
