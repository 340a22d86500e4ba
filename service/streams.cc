// The service's streaming threads, one per stream: PostgreSQL WAL, PostgreSQL change events,
// Redis commands. Each opens its stream in the archive, puts an Outflow in front of it and
// lets its runner supervise one session after another.
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "backup/pg_identity.h"
#include "backup/redis_snapshot.h"
#include "client/pg/replication_conn.h"
#include "client/redis/replication_file.h"
#include "ingest/pg/logical_source.h"
#include "ingest/pg/physical_source.h"
#include "ingest/redis/redis_source.h"
#include "pipeline/change_event.h"
#include "pipeline/check.h"
#include "service/outflow.h"
#include "service/service.h"
#include "service/source_runner.h"

namespace ferry::service {

using pipeline::Lsn;

namespace {

// A Redis source's name may not already belong to a source of another kind.
absl::Status ClaimRedisIdentity(storage::Archive& archive, const config::SourceConfig& sc) {
  auto identity = archive.GetIdentity(sc.name);
  if (absl::IsNotFound(identity.status())) return archive.SetIdentity(sc.name, {{"kind", "redis"}});
  if (!identity.ok()) return identity.status();
  if ((*identity)["kind"] != "redis") {
    return absl::FailedPreconditionError(absl::StrCat("source \"", sc.name, "\": the archive holds a ",
                                                      (*identity)["kind"], " source of that name; use another name"));
  }
  return absl::OkStatus();
}

// Where a Redis stream continues from: its last frame, with the replication id recorded for
// its epoch (a full resync with no command yet: the RDB's own offset). Without an id for the
// stream's last epoch the sync starts over, as the epoch after it.
absl::StatusOr<client::redis::RedisResume> RedisResumePoint(storage::StreamLog& log) {
  const uint32_t last_epoch = log.empty() ? 0 : log.frames().back().header.epoch;
  client::redis::RedisResume resume;
  resume.epoch = last_epoch;
  auto file = log.GetFile(client::redis::kReplicationFile);
  if (absl::IsNotFound(file.status())) return resume;
  if (!file.ok()) return file.status();
  FERRY_ASSIGN_OR_RETURN(client::redis::RedisResume recorded, client::redis::ParseReplicationFile(*file));
  if (recorded.epoch == last_epoch && !log.empty()) {
    resume = recorded;
    resume.offset = log.frames().back().header.end_pos;
  } else if (recorded.epoch > last_epoch) {
    resume = recorded;  // the epoch's RDB is stored but no command of it yet
  }
  return resume;
}

}  // namespace

OutflowContext Service::OutflowContextFor() {
  OutflowContext c;
  c.zstd_level = config_.zstd_level;
  c.keys = archive_->keys();
  c.disk_guard = &disk_guard_;
  c.kafka = kafka_;
  c.archive_path = config_.archive_path;
  c.kafka_tombstones = config_.kafka_tombstones;
  return c;
}

absl::StatusOr<storage::StreamLog*> Service::OpenStream(const config::SourceConfig& sc, pipeline::StreamKind kind) {
  absl::MutexLock lock(&archive_mu_);  // Archive is not thread-safe; sources open concurrently
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, archive_->Stream(sc.name, kind));
  if (log->repaired_bytes() > 0) {
    spdlog::warn("source={} event=torn_tail_repaired bytes={}", sc.name, log->repaired_bytes());
  }
  return log;
}

absl::Status Service::RunPostgres(SourceRunner* runner) {
  const config::SourceConfig& sc = *runner->config;
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, OpenStream(sc, pipeline::StreamKind::kPgWal));
  Outflow outflow(OutflowContextFor(), runner, log, pipeline::StreamKind::kPgWal);
  pipeline::Batcher& batcher = outflow.batcher();
  ingest::pg::PgPhysicalOptions po;
  po.conninfo = sc.conninfo;
  po.slot = sc.physical_slot;
  po.application_name = StreamApplicationName(sc);
  po.create_slot = sc.create_slot;
  po.status_interval_ms = sc.status_interval_ms;

  FERRY_RETURN_IF_ERROR(runner->Supervise(batcher, [&]() -> absl::Status {
    ingest::pg::PgPhysicalSource source(po, &batcher);
    FERRY_ASSIGN_OR_RETURN(client::pg::SystemInfo sys, source.Connect());
    FERRY_RETURN_IF_ERROR(backup::ClaimPostgresIdentity(*archive_, sc.name, sys));
    // Resume from what is durable: wait for anything still queued from a lost connection.
    FERRY_RETURN_IF_ERROR(batcher.Drain());
    ingest::pg::ResumePoint resume;
    if (!log->empty()) {
      const auto& last = log->frames().back().header;
      resume.empty = false;
      resume.timeline = pipeline::TimelineId(last.epoch);
      resume.end = Lsn(last.end_pos);
    }
    const bool active = runner->Activate([&source] { source.RequestStop(); }, [&source] {
      const auto& st = source.stats();
      return absl::StrCat("timeline=", st.timeline.load(), " received=", Lsn(st.received_lsn.load()).ToString(),
                          " flushed=", Lsn(st.reported_flush_lsn.load()).ToString(),
                          " records_verified=", st.records_verified.load(), " bytes=", st.bytes_received.load());
    });
    if (!active) return absl::OkStatus();
    spdlog::info("source={} event=streaming server_timeline={} archive_end={} slot={}", sc.name,
                 sys.timeline.value(), resume.empty ? "empty" : resume.end.ToString(), po.slot);
    runner->Streaming();
    const absl::Status st = source.Stream(resume);
    runner->Deactivate();
    return st;
  }));
  FERRY_RETURN_IF_ERROR(outflow.Stop());
  spdlog::info("source={} event=stopped synced={}", sc.name, Lsn(batcher.progress().synced()).ToString());
  return absl::OkStatus();
}

absl::Status Service::RunPgChanges(SourceRunner* runner) {
  const config::SourceConfig& sc = *runner->config;
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, OpenStream(sc, pipeline::StreamKind::kPgChanges));
  Outflow outflow(OutflowContextFor(), runner, log, pipeline::StreamKind::kPgChanges);
  pipeline::Batcher& batcher = outflow.batcher();
  ingest::pg::PgLogicalOptions lo;
  lo.conninfo = sc.conninfo;
  lo.slot = sc.logical_slot;
  lo.publication = sc.publication;
  lo.tables = sc.publication_tables;
  lo.application_name = StreamApplicationName(sc);
  lo.create_slot = sc.create_slot;
  lo.slot_failover = sc.logical_slot_failover;
  lo.status_interval_ms = sc.status_interval_ms;

  FERRY_RETURN_IF_ERROR(runner->Supervise(batcher, [&]() -> absl::Status {
    ingest::pg::PgLogicalSource source(lo, &batcher);
    FERRY_RETURN_IF_ERROR(source.Connect());
    // Resume from what is durable: wait for anything still queued from a lost connection.
    FERRY_RETURN_IF_ERROR(batcher.Drain());
    const uint64_t archive_end = log->empty() ? 0 : log->frames().back().header.end_pos;
    const bool active = runner->Activate([&source] { source.RequestStop(); }, [&source] {
      const auto& st = source.stats();
      return absl::StrCat("stream=pg-changes received=", Lsn(st.received_lsn.load()).ToString(),
                          " flushed=", Lsn(st.reported_flush_lsn.load()).ToString(),
                          " transactions=", st.transactions.load(), " events=", st.events.load(),
                          " snapshot_rows=", st.snapshot_rows.load());
    });
    if (!active) return absl::OkStatus();
    spdlog::info("source={} event=streaming stream=pg-changes slot={} publication={} archive_end={}", sc.name, lo.slot,
                 lo.publication,
                 archive_end == 0 ? std::string("empty") : Lsn(pipeline::ChangePositionLsn(archive_end)).ToString());
    runner->Streaming(" stream=pg-changes");
    absl::Status st = source.Stream(archive_end);
    runner->Deactivate();
    // Stopped while reading the initial snapshot: nothing of it was acknowledged, and the
    // next start takes it again.
    return absl::IsCancelled(st) ? absl::OkStatus() : st;
  }));
  FERRY_RETURN_IF_ERROR(outflow.Stop());
  spdlog::info("source={} event=stopped stream=pg-changes synced={}", sc.name,
               Lsn(pipeline::ChangePositionLsn(batcher.progress().synced())).ToString());
  return absl::OkStatus();
}

absl::Status Service::RunRedis(SourceRunner* runner) {
  const config::SourceConfig& sc = *runner->config;
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, OpenStream(sc, pipeline::StreamKind::kRedisCommands));
  FERRY_RETURN_IF_ERROR(ClaimRedisIdentity(*archive_, sc));
  Outflow outflow(OutflowContextFor(), runner, log, pipeline::StreamKind::kRedisCommands);
  pipeline::Batcher& batcher = outflow.batcher();
  backup::ArchiveRdbReceiver rdb(archive_->SnapshotDir(sc.name));
  ingest::redis::RedisSourceOptions ro;
  ro.endpoint = sc.redis;
  ro.repl_timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(sc.repl_timeout));
  ro.on_sync = [&](bool full, pipeline::StreamPosition from, const std::string& replid) {
    if (full) {
      // Never a silent gap: the stream's new epoch starts at this RDB.
      spdlog::warn("source={} event=full_resync epoch={} offset={} replid={} snapshot={}", sc.name, from.epoch,
                   from.offset, replid, rdb.last().id);
    } else {
      spdlog::info("source={} event=streaming sync=partial epoch={} offset={} replid={}", sc.name, from.epoch,
                   from.offset, replid);
    }
    runner->Streaming();
  };

  FERRY_RETURN_IF_ERROR(runner->Supervise(batcher, [&]() -> absl::Status {
    // Resume from what is durable.
    FERRY_RETURN_IF_ERROR(batcher.Drain());
    FERRY_ASSIGN_OR_RETURN(client::redis::RedisResume resume, RedisResumePoint(*log));
    ingest::redis::RedisSource source(ro, &batcher, &rdb);
    const bool active = runner->Activate([&source] { source.RequestStop(); }, [&source] {
      const auto& st = source.stats();
      return absl::StrCat("offset=", st.offset.load(), " acked=", st.acked_offset.load(), " commands=", st.commands.load());
    });
    if (!active) return absl::OkStatus();
    spdlog::info("source={} event=connecting address={} archive_end={}", sc.name, sc.address,
                 resume.empty ? std::string("empty") : absl::StrCat(resume.replid, ":", resume.offset));
    const absl::Status st = source.Stream(resume);
    runner->Deactivate();
    return st;
  }));
  FERRY_RETURN_IF_ERROR(outflow.Stop());
  spdlog::info("source={} event=stopped synced={}", sc.name, batcher.progress().synced());
  return absl::OkStatus();
}

}  // namespace ferry::service
