#include "tools/service/service.h"

#include <algorithm>
#include <atomic>

#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ingest/pg/physical_source.h"
#include "pipeline/batcher.h"
#include "pipeline/check.h"
#include "storage/snapshot_store.h"
#include "tools/backup/pg_backup.h"
#include "tools/backup/retention.h"

namespace ferry::tools {

using pipeline::Lsn;

struct Service::SourceRunner {
  const SourceConfig* config = nullptr;
  std::thread thread;
  std::thread backup_thread;
  std::atomic<bool> cancel_backup{false};
  absl::Status result;
  absl::Mutex mu;
  ingest::pg::PgPhysicalSource* active ABSL_GUARDED_BY(mu) = nullptr;
  bool stop ABSL_GUARDED_BY(mu) = false;
};

Service::Service(Config config) : config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Service>> Service::Create(const Config& config) {
  std::unique_ptr<Service> s(new Service(config));
  storage::ArchiveOptions o;
  o.writable = true;
  o.writer = config.writer;
  o.segment_bytes = config.segment_bytes;
  FERRY_ASSIGN_OR_RETURN(s->archive_, storage::Archive::Open(config.archive_path, o));
  // Fail at start, not at the first frame, when the chosen writer cannot work here.
  FERRY_RETURN_IF_ERROR(storage::ProbeWriter(config.writer, config.archive_path));
  for (const SourceConfig& sc : s->config_.sources) {
    if (sc.kind != "postgres") {
      return absl::UnimplementedError(absl::StrCat(
          "source \"", sc.name, "\": kind \"", sc.kind, "\" is not supported by this build yet"));
    }
    auto r = std::make_unique<SourceRunner>();
    r->config = &sc;
    s->runners_.push_back(std::move(r));
  }
  if (s->runners_.empty()) {
    return absl::InvalidArgumentError("config has no [[source]]: nothing to stream");
  }
  return s;
}

Service::~Service() {
  Stop();
  for (auto& r : runners_) {
    if (r->thread.joinable()) r->thread.join();
    if (r->backup_thread.joinable()) r->backup_thread.join();
  }
}

void Service::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& r : runners_) {
    absl::MutexLock lock(&r->mu);
    r->stop = true;
    r->cancel_backup = true;
    if (r->active != nullptr) r->active->RequestStop();
  }
}

absl::Status Service::Run() {
  for (auto& r : runners_) {
    SourceRunner* raw = r.get();
    raw->thread = std::thread([this, raw] {
      raw->result = RunPostgres(raw);
      if (!raw->result.ok()) {
        spdlog::error("source={} event=stopped error=\"{}\"", raw->config->name,
                      raw->result.ToString());
      }
    });
    if (raw->config->scheduled_backups) {
      raw->backup_thread = std::thread([this, raw] { RunBackupSchedule(raw); });
    }
  }
  std::thread reporter([this] { ReportProgress(absl::Seconds(30)); });
  absl::Status first;
  for (auto& r : runners_) {
    r->thread.join();
    {
      absl::MutexLock lock(&r->mu);  // the source is done: so is its schedule
      r->stop = true;
      r->cancel_backup = true;
    }
    if (r->backup_thread.joinable()) r->backup_thread.join();
    if (first.ok() && !r->result.ok()) first = r->result;
  }
  {
    absl::MutexLock lock(&mu_);
    sources_done_ = true;
  }
  reporter.join();
  return first;
}

void Service::ReportProgress(absl::Duration every) {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&sources_done_), every)) {
    for (auto& r : runners_) {
      absl::MutexLock source_lock(&r->mu);
      if (r->active == nullptr) continue;
      const auto& st = r->active->stats();
      spdlog::info("source={} event=progress timeline={} received={} flushed={} records_verified={} bytes={}",
                   r->config->name, st.timeline.load(), Lsn(st.received_lsn.load()).ToString(),
                   Lsn(st.reported_flush_lsn.load()).ToString(), st.records_verified.load(),
                   st.bytes_received.load());
    }
  }
}

void Service::RunBackupSchedule(SourceRunner* runner) {
  const SourceConfig& sc = *runner->config;
  absl::Time next_try = absl::Now();
  while (true) {
    {
      absl::MutexLock lock(&runner->mu);
      if (runner->mu.AwaitWithTimeout(absl::Condition(&runner->stop), absl::Seconds(2))) return;
      // A backup is restorable only with its WAL: start none until the stream is flowing.
      if (runner->active == nullptr) continue;
    }
    if (absl::Now() < next_try) continue;
    auto store = storage::SnapshotStore::Open(archive_->SnapshotDir(sc.name), false);
    if (!store.ok()) {
      spdlog::error("source={} event=backup_failed error=\"{}\"", sc.name, std::string(store.status().message()));
      next_try = absl::Now() + absl::Minutes(5);
      continue;
    }
    const auto due = DueBackup(**store, sc, pipeline::NowUnixMicros());
    if (!due.has_value()) {
      next_try = absl::Now() + absl::Seconds(30);
      continue;
    }
    spdlog::info("source={} event=backup_started class={}", sc.name, *due);
    auto outcome = TakePostgresBackup(config_.archive_path, sc, *due, &runner->cancel_backup, nullptr);
    if (!outcome.ok()) {
      if (absl::IsCancelled(outcome.status())) return;
      spdlog::error("source={} event=backup_failed error=\"{}\" retry_in=5m", sc.name,
                    std::string(outcome.status().message()));
      next_try = absl::Now() + absl::Minutes(5);
      continue;
    }
    spdlog::info("source={} event=backup_done id={} class={} start_lsn={} end_lsn={} bytes={} new_bytes={}",
                 sc.name, outcome->manifest.id, *due, outcome->manifest.Get("start_lsn"),
                 outcome->manifest.Get("end_lsn"), outcome->stats.raw_bytes,
                 outcome->stats.new_stored_bytes);
    // Retention on a read-only view of the archive: the streaming thread owns the writer.
    auto view = storage::Archive::Open(config_.archive_path, storage::ArchiveOptions{});
    auto expired = view.ok() ? ApplyRetention(**view, sc.name, PolicyOf(config_),
                                              pipeline::NowUnixMicros(), false)
                             : absl::StatusOr<RetentionResult>(view.status());
    if (!expired.ok()) {
      spdlog::error("source={} event=retention_failed error=\"{}\"", sc.name,
                    std::string(expired.status().message()));
    } else if (!expired->snapshots.empty() || !expired->files.empty()) {
      spdlog::info("source={} event=retention snapshots_deleted={} files_deleted={}", sc.name,
                   expired->snapshots.size(), expired->files.size());
    }
  }
}

absl::Status Service::RunPostgres(SourceRunner* runner) {
  const SourceConfig& sc = *runner->config;
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log,
                         archive_->Stream(sc.name, pipeline::StreamKind::kPgWal));
  if (log->repaired_bytes() > 0) {
    spdlog::warn("source={} event=torn_tail_repaired bytes={}", sc.name, log->repaired_bytes());
  }
  pipeline::BatcherOptions bo;
  bo.zstd_level = config_.zstd_level;
  pipeline::Batcher batcher(log, sc.ack, bo);
  if (!log->empty()) {
    const auto& last = log->frames().back().header;
    batcher.Resume(last.epoch, last.end_pos);
  }

  ingest::pg::PgPhysicalOptions po;
  po.conninfo = sc.conninfo;
  po.slot = sc.physical_slot;
  po.application_name = sc.application_name;
  po.create_slot = sc.create_slot;
  po.status_interval_ms = sc.status_interval_ms;

  absl::Duration backoff = absl::Milliseconds(500);
  bool was_down = false;
  while (true) {
    {
      absl::MutexLock lock(&runner->mu);
      if (runner->stop) break;
    }
    ingest::pg::PgPhysicalSource source(po, &batcher);
    absl::Status st;
    auto sys = source.Connect();
    if (sys.ok()) {
      // The archive belongs to one PostgreSQL system: refuse to mix in another's WAL.
      auto identity = archive_->GetIdentity(sc.name);
      const std::string sysid = absl::StrCat(sys->system_id);
      if (identity.ok()) {
        if ((*identity)["system_id"] != sysid) {
          return absl::FailedPreconditionError(absl::StrCat(
              "source \"", sc.name, "\": server system id ", sysid, " differs from the archive's ",
              (*identity)["system_id"], " (", archive_->path(),
              "): point the source at the right server or use a new archive"));
        }
      } else if (absl::IsNotFound(identity.status())) {
        FERRY_RETURN_IF_ERROR(archive_->SetIdentity(
            sc.name, {{"kind", "postgres"},
                      {"system_id", sysid},
                      {"wal_segment_size", absl::StrCat(sys->segment_bytes)}}));
      } else {
        return identity.status();
      }
      // Resume from what is durable: wait for anything still queued from a lost connection.
      FERRY_RETURN_IF_ERROR(batcher.Drain());
      ingest::pg::ResumePoint resume;
      if (!log->empty()) {
        const auto& last = log->frames().back().header;
        resume.empty = false;
        resume.timeline = pipeline::TimelineId(last.epoch);
        resume.end = Lsn(last.end_pos);
      }
      {
        absl::MutexLock lock(&runner->mu);
        if (runner->stop) break;
        runner->active = &source;
      }
      spdlog::info("source={} event=streaming server_timeline={} archive_end={} slot={}", sc.name,
                   sys->timeline.value(), resume.empty ? "empty" : resume.end.ToString(), po.slot);
      if (was_down) spdlog::info("source={} event=reconnected", sc.name);
      was_down = false;
      backoff = absl::Milliseconds(500);
      st = source.Stream(resume);
      absl::MutexLock lock(&runner->mu);
      runner->active = nullptr;
    } else {
      st = sys.status();
    }
    if (st.ok()) break;  // stopped on request, drained and acknowledged
    if (!absl::IsUnavailable(st)) {
      (void)batcher.Stop();
      return st;
    }
    // Connection trouble: log once per state change, retry with capped exponential backoff.
    if (!was_down) spdlog::warn("source={} event=disconnected error=\"{}\"", sc.name, std::string(st.message()));
    was_down = true;
    absl::MutexLock lock(&runner->mu);
    runner->mu.AwaitWithTimeout(absl::Condition(&runner->stop), backoff);
    backoff = std::min(backoff * 2, absl::Seconds(30));
  }
  FERRY_RETURN_IF_ERROR(batcher.Stop());
  spdlog::info("source={} event=stopped synced={}", sc.name,
               Lsn(batcher.progress().synced()).ToString());
  return absl::OkStatus();
}

}  // namespace ferry::tools
