#include "backup/pg_backup.h"

#include <spdlog/spdlog.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "backup/pg_identity.h"
#include "client/pg/replication_conn.h"
#include "ingest/pg/backup_manifest.h"
#include "ingest/pg/base_backup.h"
#include "ingest/pg/incremental_backup.h"
#include "pipeline/check.h"
#include "storage/archive.h"

namespace ferry::backup {

absl::StatusOr<PgBackupOutcome> TakePostgresBackup(
    const std::string& archive_path, const config::SourceConfig& source, const std::string& snapshot_class,
    const std::atomic<bool>* cancel, const std::function<void(uint64_t, uint64_t)>& progress,
    absl::Duration wal_wait) {
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  auto identity = archive->GetIdentity(source.name);
  if (absl::IsNotFound(identity.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the archive has no WAL stream for source \"", source.name,
        "\" yet: start `ferry run` first (a backup is only restorable with its WAL)"));
  }
  FERRY_RETURN_IF_ERROR(identity.status());
  FERRY_ASSIGN_OR_RETURN(auto conn, client::pg::ReplicationConnection::Connect(
                                        source.conninfo, source.application_name + "_backup"));
  FERRY_ASSIGN_OR_RETURN(client::pg::SystemInfo sys, conn->IdentifySystem());
  FERRY_RETURN_IF_ERROR(CheckPostgresIdentity(*identity, archive_path, source.name, sys));
  // The service holds the archive's lock, so the backup writes beside it: the same key checks.
  FERRY_RETURN_IF_ERROR(storage::CheckKeys(archive_path, archive->keys().get(), /*writing=*/true));
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive->SnapshotDir(source.name),
                                                                 /*writable=*/true, archive->keys()));
  const pipeline::UnixMicros start = pipeline::NowUnixMicros();
  FERRY_ASSIGN_OR_RETURN(
      auto writer,
      store->Begin(start / 1000000, {{"kind", "pg-base-backup"},
                                     {"class", snapshot_class},
                                     {"source", source.name},
                                     {"system_id", absl::StrCat(sys.system_id)},
                                     {"start_time", pipeline::FormatUnixMicros(start)}}));
  ingest::pg::BaseBackupOptions options;
  options.label = absl::StrCat("ferry ", source.name, " ", pipeline::FormatUnixMicros(start));
  options.progress = progress;
  options.cancel = cancel;
  const storage::SnapshotManifest* prior = nullptr;
  if (snapshot_class == "incremental") {
    FERRY_ASSIGN_OR_RETURN(prior, IncrementalBase(*conn, *store, sys, source.name));
  }
  absl::StatusOr<ingest::pg::BaseBackupResult> result;
  if (prior != nullptr) {
    result = TakeBlockIncremental(*conn, *store, *prior, options, writer.get());
    if (!result.ok() && absl::IsFailedPrecondition(result.status()) && writer->empty()) {
      // Typically: WAL summaries do not reach back to the prior backup (summarize_wal was
      // turned on after it). A full backup now, on a new connection; the next one is incremental.
      spdlog::warn("source={} event=block_incremental_refused reason=\"{}\" action=\"full backup\"", source.name,
                   std::string(result.status().message()));
      FERRY_ASSIGN_OR_RETURN(conn, client::pg::ReplicationConnection::Connect(source.conninfo,
                                                                             source.application_name + "_backup"));
      prior = nullptr;
    }
  }
  if (prior == nullptr) result = ingest::pg::TakeBaseBackup(*conn, options, writer.get());
  FERRY_RETURN_IF_ERROR(result.status());
  writer->SetMeta("received_bytes", absl::StrCat(result->bytes));
  if (prior != nullptr) writer->SetMeta("increment_of", prior->id);
  // The end time is taken after the server has finished the backup: any commit later than
  // it follows the backup's end in the WAL, which is what a --time restore relies on.
  writer->SetMeta("end_time", pipeline::FormatUnixMicros(pipeline::NowUnixMicros()));
  writer->SetMeta("start_lsn", result->points.start.ToString());
  writer->SetMeta("start_tli", absl::StrCat(result->points.start_tli.value()));
  writer->SetMeta("end_lsn", result->points.end.ToString());
  writer->SetMeta("end_tli", absl::StrCat(result->points.end_tli.value()));
  writer->SetMeta("files", absl::StrCat(result->files));
  // A backup restores only with its WAL up to its end: it is committed once that is durable
  // in the archive, never before (ferry run streams it; a stopped stream fails the backup).
  FERRY_RETURN_IF_ERROR(WaitForArchivedWal(archive_path, source.name, result->points.end, wal_wait, cancel));
  PgBackupOutcome outcome;
  FERRY_ASSIGN_OR_RETURN(outcome.manifest, writer->Commit());
  outcome.stats = writer->stats();
  return outcome;
}

absl::StatusOr<const storage::SnapshotManifest*> IncrementalBase(client::pg::ReplicationConnection& conn,
                                                                const storage::SnapshotStore& store,
                                                                const client::pg::SystemInfo& sys,
                                                                const std::string& source) {
  if (sys.server_version < 170000) return nullptr;
  FERRY_ASSIGN_OR_RETURN(const std::string summarize, conn.Show("summarize_wal"));
  if (summarize != "on") {
    spdlog::info("source={} event=backup_not_block_incremental reason=\"summarize_wal is off\" "
                 "hint=\"set summarize_wal = on and the server sends only changed blocks\"",
                 source);
    return nullptr;
  }
  const std::string system_id = absl::StrCat(sys.system_id);
  for (auto it = store.snapshots().rbegin(); it != store.snapshots().rend(); ++it) {
    if (it->Get("kind") == "pg-base-backup" && it->Get("system_id") == system_id) return &*it;
  }
  return nullptr;
}

absl::StatusOr<ingest::pg::BaseBackupResult> TakeBlockIncremental(client::pg::ReplicationConnection& conn,
                                                                  const storage::SnapshotStore& store,
                                                                  const storage::SnapshotManifest& prior,
                                                                  ingest::pg::BaseBackupOptions options,
                                                                  pipeline::SnapshotSink* out) {
  std::map<std::string, const storage::SnapshotEntry*> files;
  for (const storage::SnapshotEntry& e : prior.entries) {
    if (e.type == storage::SnapshotEntry::Type::kFile) files[e.path] = &e;
  }
  auto read_prior = [&](const std::string& path, const std::function<absl::Status(absl::string_view)>& sink) {
    auto it = files.find(path);
    if (it == files.end()) return absl::NotFoundError(path);
    return store.ReadFile(*it->second, sink);
  };
  absl::Status manifest = read_prior("backup_manifest", [&](absl::string_view bytes) {
    options.prior_manifest.append(bytes.data(), bytes.size());
    return absl::OkStatus();
  });
  if (absl::IsNotFound(manifest)) {
    return absl::DataLossError(absl::StrCat("snapshot ", prior.id, " has no backup_manifest to be incremental to"));
  }
  FERRY_RETURN_IF_ERROR(manifest);
  ingest::pg::IncrementalCombiner combiner(out, read_prior);
  FERRY_ASSIGN_OR_RETURN(ingest::pg::BaseBackupResult result, ingest::pg::TakeBaseBackup(conn, options, &combiner));
  FERRY_RETURN_IF_ERROR(combiner.Finish());
  spdlog::info("event=block_incremental increment_of={} rebuilt_files={} changed_blocks={} received_bytes={}", prior.id,
               combiner.rebuilt_files(), combiner.changed_blocks(), result.bytes);
  return result;
}

absl::Status WaitForArchivedWal(const std::string& archive_path, const std::string& source, pipeline::Lsn end,
                                absl::Duration timeout, const std::atomic<bool>* cancel) {
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * wal, archive->Stream(source, pipeline::StreamKind::kPgWal));
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const uint64_t have = wal->empty() ? 0 : wal->frames().back().header.end_pos;
    if (have >= end.value()) return absl::OkStatus();
    if (absl::Now() >= deadline || (cancel != nullptr && cancel->load())) {
      return absl::UnavailableError(absl::StrCat(
          "the backup ends at WAL ", end.ToString(), " but after ", absl::FormatDuration(timeout),
          " the archive of source \"", source, "\" holds WAL only to ", pipeline::Lsn(have).ToString(),
          ": the backup is not kept (is ferry run streaming this source?)"));
    }
    absl::SleepFor(absl::Milliseconds(50));
    FERRY_RETURN_IF_ERROR(wal->Refresh());
  }
}

absl::optional<std::string> DueBackup(const storage::SnapshotStore& snapshots,
                                      const config::SourceConfig& source, pipeline::UnixMicros now) {
  pipeline::UnixMicros last_full = 0, last_any = 0;
  for (const auto& m : snapshots.snapshots()) {
    if (m.Get("kind") != "pg-base-backup") continue;
    auto t = pipeline::ParseRfc3339(m.Get("start_time"));
    if (!t.ok()) continue;
    last_any = std::max(last_any, *t);
    if (m.Get("class") == "full") last_full = std::max(last_full, *t);
  }
  const absl::Duration since_full = absl::Microseconds(now - last_full);
  const absl::Duration since_any = absl::Microseconds(now - last_any);
  if (last_full == 0 || since_full >= source.full_backup_every) return std::string("full");
  if (since_any >= source.incremental_every) return std::string("incremental");
  return absl::nullopt;
}

absl::Status VerifySnapshot(const storage::SnapshotStore& store,
                            const storage::SnapshotManifest& snapshot) {
  std::map<std::string, ingest::pg::FileDigest> files;
  std::string pg_manifest;
  bool has_pg_manifest = false;
  for (const auto& e : snapshot.entries) {
    if (e.type != storage::SnapshotEntry::Type::kFile) continue;
    const bool is_manifest = e.path == "backup_manifest";
    ingest::pg::FileDigester digest;
    FERRY_RETURN_IF_ERROR(store.ReadFile(e, [&](absl::string_view bytes) {
      if (is_manifest) pg_manifest.append(bytes.data(), bytes.size());
      digest.Update(bytes);
      return absl::OkStatus();
    }));
    if (is_manifest) {
      has_pg_manifest = true;
    } else {
      files[e.path] = digest.Finish();
    }
  }
  if (snapshot.Get("kind") != "pg-base-backup") return absl::OkStatus();
  if (!has_pg_manifest) {
    return absl::DataLossError(absl::StrCat("snapshot ", snapshot.id, " has no backup_manifest"));
  }
  absl::Status st = ingest::pg::CheckBackupManifest(pg_manifest, files);
  if (!st.ok()) return absl::DataLossError(absl::StrCat("snapshot ", snapshot.id, ": ", st.message()));
  return absl::OkStatus();
}

}  // namespace ferry::backup
