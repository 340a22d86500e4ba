#include "tools/service/service.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <random>

#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cross_region/shipper.h"
#include "ingest/pg/logical_source.h"
#include "ingest/pg/physical_source.h"
#include "ingest/pg/replication_conn.h"
#include "ingest/redis/redis_source.h"
#include "pipeline/batcher.h"
#include "pipeline/change_event.h"
#include "pipeline/check.h"
#include "storage/durable_file.h"
#include "storage/snapshot_store.h"
#include "tools/backup/pg_backup.h"
#include "tools/backup/redis_snapshot.h"
#include "tools/backup/retention.h"
#include "tools/restore/drill.h"
#include "tools/sandbox/pg_steps.h"

namespace ferry::tools {

using pipeline::Lsn;

namespace {

// The kind of the runner that streams a PostgreSQL source's change events (its logical slot)
// beside the one that streams its WAL: each stream has its own thread, connection and batcher.
constexpr char kPgChangesKind[] = "postgres-changes";

// One runner per stream: a PostgreSQL source with a logical slot has two.
std::vector<SourceConfig> RunnerConfigs(const std::vector<SourceConfig>& sources) {
  std::vector<SourceConfig> out;
  for (const SourceConfig& sc : sources) {
    out.push_back(sc);
    if (sc.kind == "postgres" && !sc.logical_slot.empty()) {
      out.push_back(sc);
      out.back().kind = kPgChangesKind;
    }
  }
  return out;
}

}  // namespace

struct Service::SourceRunner {
  explicit SourceRunner(SourceConfig sc) : own(std::move(sc)), config(&own) {}
  const SourceConfig own;  // a copy: a reload replaces the service's config, not this
  const SourceConfig* config;
  std::once_flag joined;
  bool retired = false;        // removed or replaced by a reload (guarded by the service's mu_)
  bool joined_by_run = false;  // Run has joined it (guarded by the service's mu_)
  std::atomic<bool> ended{false};  // its streaming thread has returned (stopped or failed)
  std::thread thread;
  std::thread backup_thread;
  std::thread delay_thread;  // commit_delay = "auto" on PostgreSQL: RunCommitDelayWatch
  std::atomic<bool> cancel_backup{false};
  absl::Status result;
  absl::Mutex mu;
  // Stops the source that is streaming right now (none between connections).
  std::function<void()> stop_active ABSL_GUARDED_BY(mu);
  // Its counters as key=value pairs for the periodic progress log line.
  std::function<std::string()> progress_line ABSL_GUARDED_BY(mu);
  // For /metrics and /healthz.
  pipeline::Batcher* batcher ABSL_GUARDED_BY(mu) = nullptr;  // while it lives
  // What its batchers use: the configured commit_delay, or what "auto" makes of it now.
  absl::Duration commit_delay ABSL_GUARDED_BY(mu) = config->commit_delay_auto ? absl::ZeroDuration() : config->commit_delay;
  cross_region::StreamShipper* shipper ABSL_GUARDED_BY(mu) = nullptr;  // with [kafka], while it lives
  std::unique_ptr<cross_region::SnapshotShipper> snapshot_shipper;  // with [kafka]
  std::atomic<bool> up{false};
  std::atomic<int64_t> down_since_us{pipeline::NowUnixMicros()};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> retention_deleted{0};
  std::map<std::string, uint64_t> errors ABSL_GUARDED_BY(mu);  // sessions that ended in error, by code
  void SetActive(std::function<void()> stop, std::function<std::string()> line) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    stop_active = std::move(stop);
    progress_line = std::move(line);
  }
  // Streaming (connected and synchronised) or not; down_since_us moves only on the change, so
  // retries while the server stays away do not reset how long it has been down.
  void Up() { up = true; }
  void Down() {
    if (up.exchange(false)) down_since_us = pipeline::NowUnixMicros();
  }
  // Publishes how to stop the source now connected, and its progress line; false (nothing
  // published) when the runner was stopped meanwhile.
  bool Activate(std::function<void()> stop_source, std::function<std::string()> line) ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    if (stop) return false;
    SetActive(std::move(stop_source), std::move(line));
    return true;
  }
  // The source streams: a reconnection is logged, the backoff starts over, the runner is up.
  // `what` qualifies the log line (" stream=pg-changes").
  void Streaming(bool* was_down, absl::Duration* backoff, absl::string_view what = "") {
    if (*was_down) spdlog::info("source={} event=reconnected{}", config->name, std::string(what));
    *was_down = false;
    *backoff = absl::Milliseconds(500);
    Up();
  }
  // Its session ended: down, and nothing of it published.
  void Deactivate() ABSL_LOCKS_EXCLUDED(mu) {
    Down();
    absl::MutexLock lock(&mu);
    SetActive(nullptr, nullptr);
  }
  bool stop ABSL_GUARDED_BY(mu) = false;
};

// One source's stream on its way out: the batcher in front of the archive and, with [kafka],
// the shipper behind it, both published on the runner (for /metrics and Stop) while they live.
// The shipper reports into the batcher's progress and is woken by its syncs, so the two stop
// in that order: the batcher (its last frames synced), then the shipper (which ships them).
class Service::Outflow {
 public:
  Outflow(Service* service, SourceRunner* runner, storage::StreamLog* log, pipeline::StreamKind kind)
      : runner_(runner), link_(std::make_shared<std::atomic<cross_region::StreamShipper*>>(nullptr)) {
    const SourceConfig& sc = *runner->config;
    pipeline::BatcherOptions bo;
    bo.zstd_level = service->config_.zstd_level;
    bo.keys = service->archive_->keys();
    bo.hold = [service] { return service->disk_guard_.Low(); };
    bo.on_disk_full = [name = sc.name, kind](const absl::Status& st) {
      if (st.ok()) {
        spdlog::info("source={} stream={} event=disk_writable action=resumed", name, std::string(pipeline::StreamKindName(kind)));
      } else {
        spdlog::error("source={} stream={} event=disk_full error=\"{}\" action=holding_writes_and_acks retry_every=1s",
                      name, std::string(pipeline::StreamKindName(kind)), std::string(st.message()));
      }
    };
    bo.on_synced = [link = link_] {
      if (cross_region::StreamShipper* s = link->load()) s->Notify();
    };
    batcher_ = std::make_unique<pipeline::Batcher>(log, sc.ack, bo);
    if (!log->empty()) {
      const auto& last = log->frames().back().header;
      batcher_->Resume(last.epoch, last.end_pos);
    }
    if (!service->kafka_.brokers.empty()) {
      cross_region::StreamShipperOptions so;
      so.kafka = service->kafka_;
      so.archive_path = service->config_.archive_path;
      so.source = sc.name;
      so.kind = kind;
      so.progress = &batcher_->progress();
      so.tombstones = service->config_.kafka_tombstones;
      shipper_ = std::make_unique<cross_region::StreamShipper>(so);
      shipper_->Start();
      link_->store(shipper_.get());
    }
    absl::MutexLock lock(&runner_->mu);
    runner_->batcher = batcher_.get();
    runner_->shipper = shipper_.get();
    batcher_->SetCommitDelay(runner_->commit_delay);  // under mu: RunCommitDelayWatch sees this batcher
  }

  ~Outflow() {
    (void)Stop();
    absl::MutexLock lock(&runner_->mu);
    runner_->batcher = nullptr;
    runner_->shipper = nullptr;
  }

  pipeline::Batcher& batcher() { return *batcher_; }

  // Returns the batcher's error, if any. Idempotent.
  absl::Status Stop() {
    absl::Status st = batcher_->Stop();
    if (shipper_ != nullptr) shipper_->Stop();
    return st;
  }

 private:
  SourceRunner* const runner_;
  const std::shared_ptr<std::atomic<cross_region::StreamShipper*>> link_;
  std::unique_ptr<pipeline::Batcher> batcher_;
  std::unique_ptr<cross_region::StreamShipper> shipper_;
};

Service::Service(Config config)
    : config_(std::move(config)), disk_guard_(config_.archive_path, config_.min_free_percent / 100.0) {}

bool DiskGuard::Low() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (now - checked_ < absl::Seconds(1)) return low_;
  checked_ = now;
  struct statvfs fs;
  if (statvfs(path_.c_str(), &fs) != 0 || fs.f_blocks == 0) return low_;  // keep the last answer
  free_ = static_cast<double>(fs.f_bavail) / static_cast<double>(fs.f_blocks);
  const bool low = free_ < min_free_;
  if (low != low_) {
    // Logged once per change, not per poll.
    if (low) {
      spdlog::error("event=disk_low path={} free_percent={:.1f} min_free_percent={:.1f} action=holding_writes_and_acks",
                    path_, free_ * 100, min_free_ * 100);
    } else {
      spdlog::info("event=disk_ok path={} free_percent={:.1f} action=resumed", path_, free_ * 100);
    }
  }
  low_ = low;
  return low_;
}

double DiskGuard::FreeFraction() {
  (void)Low();
  absl::MutexLock lock(&mu_);
  return free_;
}

absl::StatusOr<std::unique_ptr<Service>> Service::Create(const Config& config) {
  std::unique_ptr<Service> s(new Service(config));
  storage::ArchiveOptions o;
  o.writable = true;
  o.writer = config.writer;
  o.segment_bytes = config.segment_bytes;
  o.keys = config.keys;
  FERRY_ASSIGN_OR_RETURN(s->archive_, storage::Archive::Open(config.archive_path, o));
  // Fail at start, not at the first frame, when the chosen writer cannot work here.
  FERRY_RETURN_IF_ERROR(storage::ProbeWriter(config.writer, config.archive_path));
  if (config.sources.empty()) {
    return absl::InvalidArgumentError("config has no [[source]]: nothing to stream");
  }
  if (!config.kafka_brokers.empty()) {
    s->kafka_.brokers = config.kafka_brokers;
    s->kafka_.topic_prefix = config.kafka_topic_prefix;
    s->kafka_.properties = config.kafka_properties;
    s->kafka_.max_message_bytes = static_cast<size_t>(config.kafka_max_message_bytes);
    if (auto n = cross_region::ParseMockBrokers(config.kafka_brokers); n.ok()) {
      FERRY_ASSIGN_OR_RETURN(s->kafka_mock_, cross_region::MockCluster::Start(*n));
      s->kafka_.brokers = s->kafka_mock_->bootstrap();
      s->kafka_.properties.erase("security.protocol");  // the mock speaks plaintext only
      spdlog::info("event=kafka_mock brokers={} bootstrap={}", *n, s->kafka_.brokers);
    }
    // For `ferry ls --json` and other processes (a mirror next to a mock cluster).
    FERRY_RETURN_IF_ERROR(storage::WriteFileAtomically(config.archive_path, "KAFKA", s->kafka_.brokers + "\n"));
  }
  absl::MutexLock lock(&s->mu_);
  for (const SourceConfig& sc : RunnerConfigs(config.sources)) s->runners_.push_back(std::make_unique<SourceRunner>(sc));
  return s;
}

Service::~Service() {
  Stop();
  for (SourceRunner* r : Runners()) JoinRunner(r);
}

std::vector<Service::SourceRunner*> Service::Runners() {
  absl::MutexLock lock(&mu_);
  std::vector<SourceRunner*> out;
  for (auto& r : runners_) out.push_back(r.get());
  return out;
}

void Service::StopRunner(SourceRunner* r) {
  absl::MutexLock lock(&r->mu);
  r->stop = true;
  r->cancel_backup = true;
  if (r->stop_active) r->stop_active();
  // A source waiting for disk space would otherwise keep the service from stopping.
  if (r->batcher != nullptr) r->batcher->StopIfHeld();
}

void Service::JoinRunner(SourceRunner* r) {
  std::call_once(r->joined, [r] {
    if (r->thread.joinable()) r->thread.join();
    {
      absl::MutexLock lock(&r->mu);  // the source is done: so is its schedule
      r->stop = true;
      r->cancel_backup = true;
    }
    if (r->backup_thread.joinable()) r->backup_thread.join();
    if (r->delay_thread.joinable()) r->delay_thread.join();
    if (r->snapshot_shipper != nullptr) r->snapshot_shipper->Stop();
  });
}

void Service::StartRunner(SourceRunner* raw) {
  raw->thread = std::thread([this, raw] {
    const std::string& kind = raw->config->kind;
    raw->result = kind == "redis" ? RunRedis(raw) : kind == kPgChangesKind ? RunPgChanges(raw) : RunPostgres(raw);
    if (!raw->result.ok()) {
      spdlog::error("source={} event=stopped error=\"{}\"", raw->config->name, raw->result.ToString());
    }
    raw->ended = true;
  });
  if (raw->config->commit_delay_auto && raw->config->kind != "redis") {
    raw->delay_thread = std::thread([this, raw] { RunCommitDelayWatch(raw); });
  }
  if (raw->config->kind == kPgChangesKind) return;  // snapshots and their shipping are the WAL runner's
  if (raw->config->scheduled_backups) {
    raw->backup_thread = std::thread([this, raw] { RunBackupSchedule(raw); });
  }
  if (!kafka_.brokers.empty()) {
    raw->snapshot_shipper = std::make_unique<cross_region::SnapshotShipper>(
        cross_region::SnapshotShipperOptions{kafka_, config_.archive_path, raw->config->name});
    raw->snapshot_shipper->Start();
  }
}

void Service::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (SourceRunner* r : Runners()) StopRunner(r);
}

namespace {

// The application_name a PostgreSQL stream connects under: what synchronous_standby_names
// names. The change events' connection has a name of its own next to the WAL's.
std::string StreamApplicationName(const SourceConfig& sc) {
  return sc.kind == kPgChangesKind ? absl::StrCat(sc.application_name, "_changes") : sc.application_name;
}

// Whether two configs of one source stream the same way (else a reload restarts it).
bool SameSource(const SourceConfig& a, const SourceConfig& b) {
  return a.kind == b.kind && a.conninfo == b.conninfo && a.physical_slot == b.physical_slot &&
         a.application_name == b.application_name && a.address == b.address && a.redis.user == b.redis.user &&
         a.redis.password == b.redis.password && a.ack == b.ack && a.scheduled_backups == b.scheduled_backups &&
         a.full_backup_every == b.full_backup_every && a.incremental_every == b.incremental_every &&
         a.snapshot_every == b.snapshot_every && a.status_interval_ms == b.status_interval_ms &&
         a.down_after == b.down_after && a.logical_slot == b.logical_slot && a.publication == b.publication &&
         a.publication_tables == b.publication_tables && a.commit_delay == b.commit_delay &&
         a.commit_delay_auto == b.commit_delay_auto &&
         a.repl_timeout == b.repl_timeout;
}

}  // namespace

void Service::Reload(const Config& next) {
  if (next.archive_path != config_.archive_path || next.writer != config_.writer ||
      next.segment_bytes != config_.segment_bytes || next.http_listen != config_.http_listen ||
      next.kafka_brokers != config_.kafka_brokers || next.kafka_topic_prefix != config_.kafka_topic_prefix ||
      next.kafka_properties != config_.kafka_properties || next.encryption_key_file != config_.encryption_key_file ||
      (next.keys == nullptr) != (config_.keys == nullptr) ||
      (next.keys != nullptr && next.keys->ids() != config_.keys->ids())) {
    spdlog::warn(
        "event=reload note=\"archive (keys included), http and kafka settings change only with a restart; applying "
        "[[source]] changes\"");
  }
  // Sources that went away or changed stop (and are joined before a replacement starts: one
  // writer per stream); new ones start. The others never notice.
  std::vector<SourceRunner*> retire;
  const std::vector<SourceConfig> wanted = RunnerConfigs(next.sources);
  std::vector<const SourceConfig*> start;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    for (auto& r : runners_) {
      if (r->retired) continue;
      bool keep = false;
      // A source that stopped on a fatal error starts again on a reload, as after a restart.
      for (const SourceConfig& sc : wanted) {
        keep = keep || (sc.name == r->config->name && SameSource(sc, *r->config) && !r->ended);
      }
      if (!keep) {
        r->retired = true;
        retire.push_back(r.get());
      }
    }
    for (const SourceConfig& sc : wanted) {
      bool running = false;
      for (auto& r : runners_) {
        running = running || (!r->retired && r->config->name == sc.name && r->config->kind == sc.kind);
      }
      if (!running) start.push_back(&sc);
    }
  }
  for (SourceRunner* r : retire) {
    spdlog::info("source={} event=reload action=stop", r->config->name);
    StopRunner(r);
    JoinRunner(r);
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  for (const SourceConfig* sc : start) {
    spdlog::info("source={} event=reload action=start kind={}", sc->name, sc->kind);
    runners_.push_back(std::make_unique<SourceRunner>(*sc));
    StartRunner(runners_.back().get());
  }
  sources_ = next.sources;
}

absl::Status Service::Run() {
  {
    absl::MutexLock lock(&mu_);
    sources_ = config_.sources;
    for (auto& r : runners_) StartRunner(r.get());
  }
  std::thread reporter([this] { ReportProgress(absl::Seconds(30)); });
  if (config_.verify_mb_per_s > 0) {
    verifier_ = std::make_unique<ArchiveVerifier>(
        config_.archive_path, static_cast<uint64_t>(config_.verify_mb_per_s) << 20, config_.verify_sweep_every);
  }
  std::thread driller;
  if (config_.drill_every > absl::ZeroDuration()) driller = std::thread([this] { RunDrillSchedule(); });
  std::unique_ptr<HttpEndpoint> http;
  if (!config_.http_listen.empty()) {
    auto started = HttpEndpoint::Start(config_.http_listen, config_.http_token, [this] { return State(); });
    if (started.ok()) {
      http = std::move(*started);
      spdlog::info("event=http listen={} port={}", config_.http_listen, http->port());
    } else {
      spdlog::error("event=http_failed error=\"{}\"", std::string(started.status().message()));
    }
  }
  // Until every source has ended; a reload may add sources meanwhile. A source that fails
  // ends alone: the others go on.
  absl::Status first;
  while (true) {
    SourceRunner* next = nullptr;
    bool retired = false;
    {
      absl::MutexLock lock(&mu_);
      for (auto& r : runners_) {
        if (!r->joined_by_run) {
          next = r.get();
          r->joined_by_run = true;
          break;
        }
      }
      if (next == nullptr) {
        sources_done_ = true;
        break;
      }
    }
    JoinRunner(next);
    {
      absl::MutexLock lock(&mu_);
      retired = next->retired;
    }
    if (first.ok() && !retired && !next->result.ok()) first = next->result;
  }
  reporter.join();
  if (driller.joinable()) driller.join();
  http.reset();
  verifier_.reset();
  // Nothing ships any more: the address is no longer the service's to advertise.
  if (!kafka_.brokers.empty()) (void)unlink((config_.archive_path + "/KAFKA").c_str());
  return first;
}

void Service::ReportProgress(absl::Duration every) {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&sources_done_), every)) {
    for (auto& r : runners_) {
      absl::MutexLock source_lock(&r->mu);
      if (!r->progress_line) continue;
      spdlog::info("source={} event=progress {}", r->config->name, r->progress_line());
    }
  }
}

void Service::RunCommitDelayWatch(SourceRunner* runner) {
  const SourceConfig& sc = *runner->config;
  const bool logical = sc.kind == kPgChangesKind;
  const std::string stream = logical ? " stream=pg-changes" : "";
  // The setting has to name the stream's own connection; the probe connects under another name.
  const std::string app = StreamApplicationName(sc);
  // Unknown (before the first answer, or once two probes in a row failed) counts as named:
  // no delay is the safe guess while the primary cannot say whether commits wait on us.
  absl::optional<bool> named;
  absl::optional<absl::Duration> applied;
  int failures = 0;
  while (!runner->ended) {
    // Connecting and SHOW are bounded (10 s each), which bounds how long a stop may wait
    // for a probe under way.
    absl::StatusOr<std::string> setting = [&]() -> absl::StatusOr<std::string> {
      FERRY_ASSIGN_OR_RETURN(auto conn, ingest::pg::ReplicationConnection::Connect(
                                            sc.conninfo, absl::StrCat(app, "_probe"), logical));
      return conn->Show("synchronous_standby_names", 10000);
    }();
    if (setting.ok()) {
      failures = 0;
      named = ingest::pg::NamesSynchronousStandby(*setting, app);
    } else {
      if (++failures == 1) {
        spdlog::warn("source={}{} event=commit_delay_probe_failed error=\"{}\"", sc.name, stream,
                     std::string(setting.status().message()));
      }
      if (failures >= 2) named.reset();
    }
    const absl::Duration delay = named.value_or(true) ? absl::ZeroDuration() : AutoCommitDelay();
    if (applied != delay) {
      applied = delay;
      spdlog::info("source={}{} event=commit_delay value={} reason=\"{}\"", sc.name, stream, absl::FormatDuration(delay),
                   !named.has_value() ? std::string("the primary does not answer the probe")
                   : *named           ? absl::StrCat("synchronous_standby_names names ", app)
                                      : absl::StrCat("asynchronous: synchronous_standby_names does not name ", app));
      absl::MutexLock lock(&runner->mu);
      runner->commit_delay = delay;
      if (runner->batcher != nullptr) runner->batcher->SetCommitDelay(delay);
    }
    absl::MutexLock lock(&runner->mu);
    if (runner->mu.AwaitWithTimeout(absl::Condition(&runner->stop), kSyncStandbyProbeEvery)) return;
  }
}

void Service::RunBackupSchedule(SourceRunner* runner) {
  const SourceConfig& sc = *runner->config;
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
    const auto due = redis ? DueRedisSnapshot(**store, sc, now) : DueBackup(**store, sc, now);
    if (!due.has_value()) {
      next_try = absl::Now() + absl::Seconds(redis ? 2 : 30);
      continue;
    }
    spdlog::info("source={} event=backup_started class={}", sc.name, *due);
    absl::StatusOr<std::string> done;
    if (redis) {
      auto snap = TakeRedisSnapshot(**view, sc, &runner->cancel_backup);
      if (snap.ok()) done = absl::StrCat("epoch=", snap->Get("epoch"), " offset=", snap->Get("offset"), " id=", snap->id);
      else done = snap.status();
    } else {
      auto outcome = TakePostgresBackup(config_.archive_path, sc, *due, &runner->cancel_backup, nullptr);
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
    auto expired = ApplyRetention(**view, sc.name, PolicyOf(config_), pipeline::NowUnixMicros(), false);
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
    SourceState s;
    s.name = r->config->name;
    s.kind = r->config->kind;
    s.up = r->up.load();
    s.down_seconds = s.up ? 0 : static_cast<double>(now - r->down_since_us.load()) / 1e6;
    s.down_after_seconds = absl::ToDoubleSeconds(r->config->down_after);
    s.reconnects = r->reconnects.load();
    s.retention_deleted = r->retention_deleted.load();
    {
      absl::MutexLock lock(&r->mu);
      s.errors = r->errors;
      if (r->batcher != nullptr) {
        pipeline::StreamProgress& p = r->batcher->progress();
        s.received = p.received();
        s.synced = p.synced();
        s.acked = p.Acked();
        const pipeline::BatcherStats& b = r->batcher->stats();
        s.frames = b.frames.load();
        s.raw_bytes = b.raw_bytes.load();
        s.stored_bytes = b.stored_bytes.load();
        s.writes = b.writes.load();
        s.write_seconds = static_cast<double>(b.write_micros.load()) / 1e6;
        for (const auto& bucket : b.latency_buckets) s.latency_buckets.push_back(bucket.load());
        s.commit_delay_seconds = absl::ToDoubleSeconds(r->batcher->commit_delay());
      }
      if (r->shipper != nullptr) {
        const cross_region::ShipperStats& k = r->shipper->stats();
        s.kafka = true;
        s.kafka_connected = k.connected.load();
        s.shipped = k.shipped_pos.load();
        s.shipped_frames = k.frames.load();
        s.shipped_bytes = k.bytes.load();
        s.change_events_shipped = k.change_events.load();
        const int64_t arrival = k.shipped_arrival_us.load();
        s.ship_lag_seconds = s.shipped >= s.synced || arrival == 0 ? 0 : static_cast<double>(now - arrival) / 1e6;
      }
      if (r->snapshot_shipper != nullptr) s.snapshots_shipped = r->snapshot_shipper->shipped().load();
    }
    if (s.kind == kPgChangesKind) {
      // Its positions are (LSN << 16 | part): show the LSNs, comparable with the WAL stream's.
      for (uint64_t* pos : {&s.received, &s.synced, &s.acked, &s.shipped}) *pos = pipeline::ChangePositionLsn(*pos);
    }
    // Read-only looks at the archive: the streaming threads own the writers.
    auto store = storage::SnapshotStore::Open(archive_->SnapshotDir(s.name), false);
    if (store.ok()) {
      for (const auto& m : (*store)->snapshots()) {
        auto end = pipeline::ParseRfc3339(m.Get("end_time"));
        if (end.ok()) {
          const double age = static_cast<double>(now - *end) / 1e6;
          if (s.snapshot_age_seconds < 0 || age < s.snapshot_age_seconds) s.snapshot_age_seconds = age;
        }
      }
    }
    std::error_code ec;
    for (const auto& e : std::filesystem::recursive_directory_iterator(archive_->SourceDir(s.name), ec)) {
      std::error_code size_ec;
      if (e.is_regular_file(size_ec)) s.archive_bytes += e.file_size(size_ec);
    }
    st.sources.push_back(std::move(s));
  }
  st.archive_free_fraction = disk_guard_.FreeFraction();
  st.kafka_bootstrap = kafka_.brokers;
  st.kafka_topic_prefix = kafka_.topic_prefix;
  st.min_free_fraction = config_.min_free_percent / 100.0;
  if (auto drill = LoadLastDrill(config_.archive_path); drill.ok()) st.last_drill = *drill;
  if (verifier_ != nullptr) {
    st.archive_damage = verifier_->Damage();
    st.verified_bytes = verifier_->verified_bytes();
    st.verify_sweeps = verifier_->sweeps();
  }
  return st;
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
    auto last = LoadLastDrill(config_.archive_path);
    const absl::Duration wait =
        last.ok() && !last->ok() ? std::min(wait_after_failure, config_.drill_every) : config_.drill_every;
    if (last.ok() && absl::Microseconds(pipeline::NowUnixMicros() - last->started) < wait) continue;
    // The first drill waits until every source has something to restore.
    Config current = config_;
    {
      absl::MutexLock lock(&mu_);
      current.sources = sources_;
    }
    bool restorable = true;
    for (const SourceConfig& sc : current.sources) {
      auto store = storage::SnapshotStore::Open(archive_->SnapshotDir(sc.name), false);
      if (!store.ok() || (*store)->snapshots().empty()) restorable = false;
    }
    if (!restorable) continue;
    spdlog::info("event=drill_started");
    auto report = RunDrill(current, "latest", SelfExecutable());
    if (!report.ok()) {
      spdlog::error("event=drill_failed error=\"{}\"", std::string(report.status().message()));
      continue;
    }
    for (const SourceDrill& d : report->sources) {
      spdlog::info("source={} event=drill ok={} rto_s={:.1f} rpo_s={:.1f}", d.source, d.ok(), d.rto_seconds, d.rpo_seconds);
      for (const DrillCheck& c : d.checks) {
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
    if (absl::Status st = SaveLastDrill(config_.archive_path, *report); !st.ok()) {
      spdlog::error("event=drill_not_saved error=\"{}\"", std::string(st.message()));
    }
  }
}

absl::StatusOr<bool> Service::RetryAfter(SourceRunner* runner, const absl::Status& st, pipeline::Batcher& batcher,
                                          bool* was_down, absl::Duration* backoff) {
  if (st.ok()) return false;  // stopped on request, drained and acknowledged
  {
    absl::MutexLock lock(&runner->mu);
    ++runner->errors[absl::StatusCodeToString(st.code())];
  }
  if (!absl::IsUnavailable(st)) {
    (void)batcher.Stop();
    return st;
  }
  // Connection trouble: log once per state change, retry with capped exponential backoff.
  runner->reconnects.fetch_add(1);
  if (!*was_down) {
    spdlog::warn("source={} event=disconnected error=\"{}\"", runner->config->name, std::string(st.message()));
  }
  *was_down = true;
  absl::MutexLock lock(&runner->mu);
  // ±20 % jitter, so that many ferries losing one server do not come back in lockstep.
  thread_local std::mt19937 rng(std::random_device{}());
  const double jitter = std::uniform_real_distribution<double>(0.8, 1.2)(rng);
  runner->mu.AwaitWithTimeout(absl::Condition(&runner->stop), *backoff * jitter);
  *backoff = std::min(*backoff * 2, absl::Seconds(30));
  return true;
}

absl::StatusOr<storage::StreamLog*> Service::OpenStream(const SourceConfig& sc, pipeline::StreamKind kind) {
  absl::MutexLock lock(&archive_mu_);  // Archive is not thread-safe; sources open concurrently
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, archive_->Stream(sc.name, kind));
  if (log->repaired_bytes() > 0) {
    spdlog::warn("source={} event=torn_tail_repaired bytes={}", sc.name, log->repaired_bytes());
  }
  return log;
}

absl::Status Service::RunPostgres(SourceRunner* runner) {
  const SourceConfig& sc = *runner->config;
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, OpenStream(sc, pipeline::StreamKind::kPgWal));
  Outflow outflow(this, runner, log, pipeline::StreamKind::kPgWal);
  pipeline::Batcher& batcher = outflow.batcher();

  ingest::pg::PgPhysicalOptions po;
  po.conninfo = sc.conninfo;
  po.slot = sc.physical_slot;
  po.application_name = StreamApplicationName(sc);
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
      const bool active = runner->Activate([&source] { source.RequestStop(); }, [&source] {
        const auto& st = source.stats();
        return absl::StrCat("timeline=", st.timeline.load(), " received=", Lsn(st.received_lsn.load()).ToString(),
                            " flushed=", Lsn(st.reported_flush_lsn.load()).ToString(),
                            " records_verified=", st.records_verified.load(), " bytes=", st.bytes_received.load());
      });
      if (!active) break;
      spdlog::info("source={} event=streaming server_timeline={} archive_end={} slot={}", sc.name,
                   sys->timeline.value(), resume.empty ? "empty" : resume.end.ToString(), po.slot);
      runner->Streaming(&was_down, &backoff);
      st = source.Stream(resume);
      runner->Deactivate();
    } else {
      st = sys.status();
    }
    FERRY_ASSIGN_OR_RETURN(bool retry, RetryAfter(runner, st, batcher, &was_down, &backoff));
    if (!retry) break;
  }
  FERRY_RETURN_IF_ERROR(outflow.Stop());
  spdlog::info("source={} event=stopped synced={}", sc.name,
               Lsn(batcher.progress().synced()).ToString());
  return absl::OkStatus();
}

absl::Status Service::RunPgChanges(SourceRunner* runner) {
  const SourceConfig& sc = *runner->config;
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, OpenStream(sc, pipeline::StreamKind::kPgChanges));
  Outflow outflow(this, runner, log, pipeline::StreamKind::kPgChanges);
  pipeline::Batcher& batcher = outflow.batcher();

  ingest::pg::PgLogicalOptions lo;
  lo.conninfo = sc.conninfo;
  lo.slot = sc.logical_slot;
  lo.publication = sc.publication;
  lo.tables = sc.publication_tables;
  lo.application_name = StreamApplicationName(sc);
  lo.create_slot = sc.create_slot;
  lo.status_interval_ms = sc.status_interval_ms;

  absl::Duration backoff = absl::Milliseconds(500);
  bool was_down = false;
  while (true) {
    {
      absl::MutexLock lock(&runner->mu);
      if (runner->stop) break;
    }
    ingest::pg::PgLogicalSource source(lo, &batcher);
    absl::Status st = source.Connect();
    if (st.ok()) {
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
      if (!active) break;
      spdlog::info("source={} event=streaming stream=pg-changes slot={} publication={} archive_end={}", sc.name,
                   lo.slot, lo.publication,
                   archive_end == 0 ? std::string("empty") : Lsn(pipeline::ChangePositionLsn(archive_end)).ToString());
      runner->Streaming(&was_down, &backoff, " stream=pg-changes");
      st = source.Stream(archive_end);
      // Stopped while reading the initial snapshot: nothing of it was acknowledged, and the
      // next start takes it again.
      if (absl::IsCancelled(st)) st = absl::OkStatus();
      runner->Deactivate();
    }
    FERRY_ASSIGN_OR_RETURN(bool retry, RetryAfter(runner, st, batcher, &was_down, &backoff));
    if (!retry) break;
  }
  FERRY_RETURN_IF_ERROR(outflow.Stop());
  spdlog::info("source={} event=stopped stream=pg-changes synced={}", sc.name,
               Lsn(pipeline::ChangePositionLsn(batcher.progress().synced())).ToString());
  return absl::OkStatus();
}

absl::Status Service::RunRedis(SourceRunner* runner) {
  const SourceConfig& sc = *runner->config;
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, OpenStream(sc, pipeline::StreamKind::kRedisCommands));
  auto identity = archive_->GetIdentity(sc.name);
  if (identity.ok() && (*identity)["kind"] != "redis") {
    return absl::FailedPreconditionError(absl::StrCat("source \"", sc.name, "\": the archive holds a ",
                                                      (*identity)["kind"], " source of that name; use another name"));
  }
  if (absl::IsNotFound(identity.status())) {
    FERRY_RETURN_IF_ERROR(archive_->SetIdentity(sc.name, {{"kind", "redis"}}));
  } else if (!identity.ok()) {
    return identity.status();
  }
  Outflow outflow(this, runner, log, pipeline::StreamKind::kRedisCommands);
  pipeline::Batcher& batcher = outflow.batcher();
  ArchiveRdbReceiver rdb(archive_->SnapshotDir(sc.name));
  ingest::redis::RedisSourceOptions ro;
  ro.endpoint = sc.redis;
  ro.repl_timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(sc.repl_timeout));
  bool was_down = false;
  absl::Duration backoff = absl::Milliseconds(500);
  ro.on_sync = [&](bool full, uint32_t epoch, uint64_t offset, const std::string& replid) {
    if (full) {
      // Never a silent gap: the stream's new epoch starts at this RDB.
      spdlog::warn("source={} event=full_resync epoch={} offset={} replid={} snapshot={}", sc.name, epoch,
                   offset, replid, rdb.last().id);
    } else {
      spdlog::info("source={} event=streaming sync=partial epoch={} offset={} replid={}", sc.name, epoch,
                   offset, replid);
    }
    runner->Streaming(&was_down, &backoff);
  };

  while (true) {
    {
      absl::MutexLock lock(&runner->mu);
      if (runner->stop) break;
    }
    // Resume from what is durable: the stream's last frame, with the replication id recorded
    // for its epoch (a full resync with no command yet: the RDB's own offset).
    FERRY_RETURN_IF_ERROR(batcher.Drain());
    // Without an id for the stream's last epoch the sync starts over, as the epoch after it.
    const uint32_t last_epoch = log->empty() ? 0 : log->frames().back().header.epoch;
    ingest::redis::RedisResume resume;
    resume.epoch = last_epoch;
    auto file = log->GetFile(ingest::redis::kReplicationFile);
    if (file.ok()) {
      FERRY_ASSIGN_OR_RETURN(ingest::redis::RedisResume recorded, ingest::redis::ParseReplicationFile(*file));
      if (recorded.epoch == last_epoch && !log->empty()) {
        resume = recorded;
        resume.offset = log->frames().back().header.end_pos;
      } else if (recorded.epoch > last_epoch) {
        resume = recorded;  // the epoch's RDB is stored but no command of it yet
      }
    } else if (!absl::IsNotFound(file.status())) {
      return file.status();
    }
    ingest::redis::RedisSource source(ro, &batcher, &rdb);
    const bool active = runner->Activate([&source] { source.RequestStop(); }, [&source] {
      const auto& st = source.stats();
      return absl::StrCat("offset=", st.offset.load(), " acked=", st.acked_offset.load(), " commands=", st.commands.load());
    });
    if (!active) break;
    spdlog::info("source={} event=connecting address={} archive_end={}", sc.name, sc.address,
                 resume.empty ? std::string("empty") : absl::StrCat(resume.replid, ":", resume.offset));
    absl::Status st = source.Stream(resume);
    runner->Deactivate();
    FERRY_ASSIGN_OR_RETURN(bool retry, RetryAfter(runner, st, batcher, &was_down, &backoff));
    if (!retry) break;
  }
  FERRY_RETURN_IF_ERROR(outflow.Stop());
  spdlog::info("source={} event=stopped synced={}", sc.name, batcher.progress().synced());
  return absl::OkStatus();
}

}  // namespace ferry::tools
