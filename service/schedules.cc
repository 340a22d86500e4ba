// The service's schedules: each source's base backups or Redis snapshots (and retention after
// each), and the drills of the whole archive.
#include <algorithm>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "backup/pg_backup.h"
#include "backup/redis_snapshot.h"
#include "backup/retention.h"
#include "local/process.h"
#include "restore/drill.h"
#include "service/service.h"
#include "service/source_runner.h"
#include "storage/snapshot_store.h"

namespace ferry::service {

void Service::RunBackupSchedule(SourceRunner* runner) {
  const config::SourceConfig& sc = *runner->config;
  const bool redis = sc.kind == "redis";
  absl::Time next_try = absl::Now();
  while (true) {
    {
      absl::MutexLock lock(&runner->mu);
      if (runner->mu.AwaitWithTimeout(absl::Condition(&runner->stop), absl::Seconds(2))) return;
      // A snapshot is restorable only with the stream after it: none until it is flowing.
      if (!runner->stop_active) continue;
    }
    if (absl::Now() < next_try) continue;
    // A read-only view of the archive: the streaming thread owns the writer.
    auto view = storage::Archive::Open(config_.archive_path, storage::ArchiveOptions{});
    auto store = view.ok() ? storage::SnapshotStore::Open((*view)->SnapshotDir(sc.name), false)
                           : absl::StatusOr<std::unique_ptr<storage::SnapshotStore>>(view.status());
    if (!store.ok()) {
      spdlog::error("source={} event=backup_failed error=\"{}\"", sc.name, std::string(store.status().message()));
      next_try = absl::Now() + absl::Minutes(5);
      continue;
    }
    const pipeline::UnixMicros now = pipeline::NowUnixMicros();
    const auto due = redis ? backup::DueRedisSnapshot(**store, sc, now) : backup::DueBackup(**store, sc, now);
    if (!due.has_value()) {
      next_try = absl::Now() + absl::Seconds(redis ? 2 : 30);
      continue;
    }
    spdlog::info("source={} event=backup_started class={}", sc.name, *due);
    absl::StatusOr<std::string> done;
    if (redis) {
      auto snap = backup::TakeRedisSnapshot(**view, sc, &runner->cancel_backup);
      if (snap.ok()) done = absl::StrCat("epoch=", snap->Get("epoch"), " offset=", snap->Get("offset"), " id=", snap->id);
      else done = snap.status();
    } else {
      auto outcome = backup::TakePostgresBackup(config_.archive_path, sc, *due, &runner->cancel_backup, nullptr);
      if (outcome.ok()) {
        done = absl::StrCat("id=", outcome->manifest.id, " start_lsn=", outcome->manifest.Get("start_lsn"),
                            " end_lsn=", outcome->manifest.Get("end_lsn"), " bytes=", outcome->stats.raw_bytes,
                            " new_bytes=", outcome->stats.new_stored_bytes);
      } else {
        done = outcome.status();
      }
    }
    if (!done.ok()) {
      if (absl::IsCancelled(done.status())) return;
      spdlog::error("source={} event=backup_failed error=\"{}\" retry_in=5m", sc.name,
                    std::string(done.status().message()));
      next_try = absl::Now() + absl::Minutes(5);
      continue;
    }
    spdlog::info("source={} event=backup_done class={} {}", sc.name, *due, *done);
    auto expired = backup::ApplyRetention(**view, sc.name, backup::PolicyOf(config_), pipeline::NowUnixMicros(), false);
    if (!expired.ok()) {
      spdlog::error("source={} event=retention_failed error=\"{}\"", sc.name,
                    std::string(expired.status().message()));
    } else if (!expired->snapshots.empty() || !expired->files.empty()) {
      runner->retention_deleted.fetch_add(expired->snapshots.size() + expired->files.size());
      spdlog::info("source={} event=retention snapshots_deleted={} files_deleted={}", sc.name,
                   expired->snapshots.size(), expired->files.size());
    }
  }
}

void Service::RunDrillSchedule() {
  // A failed drill is retried from a minute on, doubling up to drill_every, so that health
  // clears soon after the cause is fixed instead of staying red for a week.
  absl::Duration retry = absl::Minutes(1);  // after the next failure
  absl::Duration wait_after_failure = retry;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&sources_done_), absl::Seconds(5))) return;
    }
    auto last = restore::LoadLastDrill(config_.archive_path);
    const absl::Duration wait =
        last.ok() && !last->ok() ? std::min(wait_after_failure, config_.drill_every) : config_.drill_every;
    if (last.ok() && absl::Microseconds(pipeline::NowUnixMicros() - last->started) < wait) continue;
    // The first drill waits until every source has something to restore.
    config::Config current = config_;
    {
      absl::MutexLock lock(&mu_);
      current.sources = sources_;
    }
    bool restorable = true;
    for (const config::SourceConfig& sc : current.sources) {
      auto store = storage::SnapshotStore::Open(archive_->SnapshotDir(sc.name), false);
      if (!store.ok() || (*store)->snapshots().empty()) restorable = false;
    }
    if (!restorable) continue;
    spdlog::info("event=drill_started");
    auto report = restore::RunDrill(current, "latest", local::SelfExecutable());
    if (!report.ok()) {
      spdlog::error("event=drill_failed error=\"{}\"", std::string(report.status().message()));
      continue;
    }
    for (const restore::SourceDrill& d : report->sources) {
      spdlog::info("source={} event=drill ok={} rto_s={:.1f} rpo_s={:.1f}", d.source, d.ok(), d.rto_seconds, d.rpo_seconds);
      for (const restore::DrillCheck& c : d.checks) {
        if (!c.ok) spdlog::error("source={} event=drill_check_failed check={} error=\"{}\"", d.source, c.name, c.detail);
      }
    }
    if (report->ok()) {
      retry = absl::Minutes(1);
    } else {
      wait_after_failure = std::min(retry, config_.drill_every);
      retry = std::min(retry * 2, config_.drill_every);
      spdlog::warn("event=drill_retry in={}", absl::FormatDuration(wait_after_failure));
    }
    if (absl::Status st = restore::SaveLastDrill(config_.archive_path, *report); !st.ok()) {
      spdlog::error("event=drill_not_saved error=\"{}\"", std::string(st.message()));
    }
  }
}

}  // namespace ferry::service
