// PostgreSQL point-in-time restore: choose the snapshot and check that the WAL from it to
// the target is all in the archive (before anything is written), materialise the snapshot,
// and write the recovery settings that replay archived WAL through `ferry wal-fetch`. The
// WAL check (CheckRestoreWal) is declared in wal_check.h, which this includes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "pipeline/position.h"
#include "restore/wal_check.h"
#include "storage/snapshot_store.h"
#include "storage/stream_log.h"

namespace ferry::restore {

struct PgTarget {
  enum class Kind { kLatest, kTime, kLsn, kXid } kind = Kind::kLatest;
  pipeline::UnixMicros time = 0;
  pipeline::Lsn lsn;
  // kLsn: false stops before the first record that starts at or after `lsn` (what ferry had
  // at an instant, or a mark) instead of just after it (PostgreSQL's default).
  bool inclusive = true;
  uint32_t xid = 0;
  // kLatest only: a warm standby (standby.signal) that keeps replaying what the archive
  // receives (wal-fetch on a mirror's archive) until promoted, instead of recovering once.
  bool standby = false;
};

struct PgRestorePlan {
  const storage::SnapshotManifest* snapshot = nullptr;
  // What recovery stops at: the recovery_target_* line (empty for kLatest).
  std::string target_setting;
  // The archive position that must be reached (kLatest: the end of the archive).
  pipeline::Lsn replay_to;
  std::string description;  // "time 2026-...Z", "lsn 0/3000000", "xid 1234", "latest"
  // The frames recovery will read: from the one holding the backup's first WAL byte to the
  // last of the segments recovery may ask for (it reads ahead of the target).
  int64_t first_frame = 0;
  int64_t last_frame = 0;
};

// The newest snapshot that ends before the target, with every WAL byte from its start to
// the target in `wal`. kOutOfRange when the target is outside the window (before the oldest
// usable snapshot, after the latest synced commit) and kDataLoss for a WAL gap, each naming
// what is missing. `segment_bytes` and `system_id` are the source's (for --xid decoding).
absl::StatusOr<PgRestorePlan> PlanPgRestore(const storage::StreamLog& wal,
                                            const storage::SnapshotStore& snapshots,
                                            const PgTarget& target, uint64_t segment_bytes,
                                            uint64_t system_id);

// The restorable window of a source (PostgreSQL or Redis): the earliest and latest instant a
// restore can reach. `valid` false when nothing can be restored yet.
struct RestoreWindow {
  bool valid = false;
  pipeline::UnixMicros earliest = 0;
  pipeline::UnixMicros latest = 0;  // what --latest reaches
  std::string why_not;              // when !valid
};

// PostgreSQL's: from the end of the oldest snapshot whose WAL is complete up to the
// archive's end, to the last archived commit (invalid without a snapshot, or when its WAL is
// incomplete).
RestoreWindow PgRestorableWindow(const storage::StreamLog& wal, const storage::SnapshotStore& snapshots);

// Every WAL frame of the restorable window (from the oldest backup whose start is archived to
// the archive's end) read and checked as a restore checks it: a drill's proof that PITR works
// to any instant of the window, not only to the one it restored. kDataLoss names the damage.
absl::Status CheckPgWindowWal(const std::string& archive_path, const std::string& source);

// Writes the snapshot's files into `target`, which must not exist or be empty
// (kFailedPrecondition otherwise, before anything is written). progress(done, total) in bytes.
absl::Status MaterialiseSnapshot(const storage::SnapshotStore& store,
                                 const storage::SnapshotManifest& snapshot,
                                 const std::string& target,
                                 const std::function<void(uint64_t, uint64_t)>& progress);

// Appends the recovery settings to target/postgresql.auto.conf and creates recovery.signal:
// restore_command on `ferry_binary wal-fetch` (and recovery_end_command dropping its
// decompress-ahead spool), the target line (if any), promotion at the
// target, the latest timeline, and no archiving or synchronous standby in the clone.
absl::Status WriteRecoverySettings(const std::string& target, const std::string& ferry_binary,
                                   const std::string& archive, const std::string& source,
                                   const std::string& target_setting, bool standby = false);

// The whole restore as `ferry restore postgres` does it (without starting the server):
// open the archive, plan, materialise with a progress bar on a terminal while every WAL frame
// recovery needs is checked, write the recovery settings (--latest: a recovery_target_lsn at
// the archive's last record, so that PostgreSQL refuses to promote short of it). A failed
// restore leaves `to` as it found it.
struct PgRestored {
  std::string summary;  // one line
  // Where replay must have got to (pg_last_wal_replay_lsn) for the restore to be whole;
  // invalid when PostgreSQL's own target check is the whole check (time, xid, exclusive lsn).
  pipeline::Lsn must_reach;
};
absl::StatusOr<PgRestored> RestorePostgresTo(const std::string& archive_path,
                                              const std::string& source, const PgTarget& target,
                                              const std::string& to,
                                              const std::string& ferry_binary);

// Refuses a target directory that exists and is not empty.
absl::Status CheckEmptyTarget(const std::string& target);

}  // namespace ferry::restore
