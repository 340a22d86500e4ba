// Taking a PostgreSQL base backup into the archive as a snapshot, and deciding when one is
// due (docs/design.md). Used by `ferry backup` and by the service's scheduler.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "client/pg/replication_conn.h"
#include "config/config.h"
#include "ingest/pg/base_backup.h"
#include "pipeline/position.h"
#include "storage/snapshot_store.h"

namespace ferry::backup {

struct PgBackupOutcome {
  storage::SnapshotManifest manifest;
  storage::SnapshotWriteStats stats;
};

// Backs up `source` into the archive at `archive_path` on a replication connection of its
// own (so it runs beside a streaming `ferry run`). The archive must already hold the
// source's WAL stream: a backup is only restorable with the WAL from its start on, so
// without it this refuses (kFailedPrecondition) rather than store an unusable snapshot.
// `snapshot_class` is "full" or "incremental" (retention classes; storage is deduplicated
// either way). The backup is committed only once the archive holds its WAL up to the
// backup's end (WaitForArchivedWal, for at most `wal_wait`); progress(done, total) in bytes.
absl::StatusOr<PgBackupOutcome> TakePostgresBackup(
    const std::string& archive_path, const config::SourceConfig& source, const std::string& snapshot_class,
    const std::atomic<bool>* cancel, const std::function<void(uint64_t, uint64_t)>& progress,
    absl::Duration wal_wait = absl::Seconds(60));

// The snapshot an incremental backup of `sys` is taken against, by PostgreSQL's own block
// increments: the newest base backup of the same system, when the server is 17+ with
// summarize_wal on; null otherwise (the backup is then a whole one, deduplicated in store).
absl::StatusOr<const storage::SnapshotManifest*> IncrementalBase(client::pg::ReplicationConnection& conn,
                                                                const storage::SnapshotStore& store,
                                                                const client::pg::SystemInfo& sys,
                                                                const std::string& source);

// Takes a block-incremental backup against `prior` (UPLOAD_MANIFEST of its backup_manifest,
// BASE_BACKUP INCREMENTAL) and stores it in `out` whole: each INCREMENTAL file rebuilt from
// prior's copy (ingest::pg::IncrementalCombiner), with a backup_manifest of what is stored.
absl::StatusOr<ingest::pg::BaseBackupResult> TakeBlockIncremental(client::pg::ReplicationConnection& conn,
                                                                  const storage::SnapshotStore& store,
                                                                  const storage::SnapshotManifest& prior,
                                                                  ingest::pg::BaseBackupOptions options,
                                                                  pipeline::SnapshotSink* out);

// Returns once the archive's WAL of `source` reaches `end` (the service is streaming it);
// kUnavailable naming both positions after `timeout` or on *cancel.
absl::Status WaitForArchivedWal(const std::string& archive_path, const std::string& source, pipeline::Lsn end,
                                absl::Duration timeout, const std::atomic<bool>* cancel = nullptr);

// Which backup is due at `now` given the source's snapshots: "full" when there is none or
// the newest full one is full_backup_every old, "incremental" when the newest backup is
// incremental_every old, nullopt when none is due.
absl::optional<std::string> DueBackup(const storage::SnapshotStore& snapshots,
                                      const config::SourceConfig& source, pipeline::UnixMicros now);

// Reads every chunk of a snapshot (checking chunk checksums and ids) and, for a PostgreSQL
// base backup, checks every file against the backup_manifest stored with it. kDataLoss
// naming the first damage.
absl::Status VerifySnapshot(const storage::SnapshotStore& store,
                            const storage::SnapshotManifest& snapshot);

}  // namespace ferry::backup
