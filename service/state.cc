// What /healthz, /metrics and /status show: the service's state, assembled per request from
// its runners, their batchers and shippers, and read-only looks at the archive.
#include <filesystem>

#include "pipeline/change_event.h"
#include "restore/drill.h"
#include "service/service.h"
#include "service/source_runner.h"
#include "storage/snapshot_store.h"

namespace ferry::service {

namespace {

// A runner's own counters, and those of its batcher and shipper while they live.
SourceState RunnerState(SourceRunner& r, pipeline::UnixMicros now) {
  SourceState s;
  s.name = r.config->name;
  s.kind = r.config->kind;
  s.up = r.up.load();
  s.down_seconds = s.up ? 0 : static_cast<double>(now - r.down_since_us.load()) / 1e6;
  s.down_after_seconds = absl::ToDoubleSeconds(r.config->down_after);
  s.reconnects = r.reconnects.load();
  s.retention_deleted = r.retention_deleted.load();
  absl::MutexLock lock(&r.mu);
  s.errors = r.errors;
  if (r.batcher != nullptr) {
    pipeline::StreamProgress& p = r.batcher->progress();
    s.received = p.received();
    s.synced = p.synced();
    s.acked = p.Acked();
    const pipeline::BatcherStats& b = r.batcher->stats();
    s.frames = b.frames.load();
    s.raw_bytes = b.raw_bytes.load();
    s.stored_bytes = b.stored_bytes.load();
    s.writes = b.writes.load();
    s.write_seconds = static_cast<double>(b.write_micros.load()) / 1e6;
    for (const auto& bucket : b.latency_buckets) s.latency_buckets.push_back(bucket.load());
    s.commit_delay_seconds = absl::ToDoubleSeconds(r.batcher->commit_delay());
  }
  if (r.shipper != nullptr) {
    const cross_region::ShipperStats& k = r.shipper->stats();
    s.kafka = true;
    s.kafka_connected = k.connected.load();
    s.shipped = k.shipped_pos.load();
    s.shipped_frames = k.frames.load();
    s.shipped_bytes = k.bytes.load();
    s.change_events_shipped = k.change_events.load();
    const int64_t arrival = k.shipped_arrival_us.load();
    s.ship_lag_seconds = s.shipped >= s.synced || arrival == 0 ? 0 : static_cast<double>(now - arrival) / 1e6;
  }
  if (r.snapshot_shipper != nullptr) s.snapshots_shipped = r.snapshot_shipper->shipped().load();
  return s;
}

// The newest snapshot's age and the bytes on disk: read-only looks at the archive (the
// streaming threads own the writers).
void AddArchiveFacts(const storage::Archive& archive, pipeline::UnixMicros now, SourceState* s) {
  auto store = storage::SnapshotStore::Open(archive.SnapshotDir(s->name), false);
  if (store.ok()) {
    for (const auto& m : (*store)->snapshots()) {
      auto end = pipeline::ParseRfc3339(m.Get("end_time"));
      if (end.ok()) {
        const double age = static_cast<double>(now - *end) / 1e6;
        if (s->snapshot_age_seconds < 0 || age < s->snapshot_age_seconds) s->snapshot_age_seconds = age;
      }
    }
  }
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(archive.SourceDir(s->name), ec)) {
    std::error_code size_ec;
    if (e.is_regular_file(size_ec)) s->archive_bytes += e.file_size(size_ec);
  }
}

}  // namespace

ServiceState Service::State() {
  ServiceState st;
  st.region = config_.region;
  st.archive_path = config_.archive_path;
  st.listen = config_.http_listen;
  const pipeline::UnixMicros now = pipeline::NowUnixMicros();
  for (SourceRunner* r : Runners()) {
    {
      absl::MutexLock lock(&mu_);
      if (r->retired) continue;
    }
    SourceState s = RunnerState(*r, now);
    if (s.kind == kPgChangesKind) {
      // Its positions are (LSN << 16 | part): show the LSNs, comparable with the WAL stream's.
      for (uint64_t* pos : {&s.received, &s.synced, &s.acked, &s.shipped}) *pos = pipeline::ChangePositionLsn(*pos);
    }
    AddArchiveFacts(*archive_, now, &s);
    st.sources.push_back(std::move(s));
  }
  st.archive_free_fraction = disk_guard_.FreeFraction();
  st.kafka_bootstrap = kafka_.brokers;
  st.kafka_topic_prefix = kafka_.topic_prefix;
  st.min_free_fraction = config_.min_free_percent / 100.0;
  if (auto drill = restore::LoadLastDrill(config_.archive_path); drill.ok()) st.last_drill = *drill;
  if (verifier_ != nullptr) {
    st.archive_damage = verifier_->Damage();
    st.verified_bytes = verifier_->verified_bytes();
    st.verify_sweeps = verifier_->sweeps();
  }
  return st;
}

}  // namespace ferry::service
