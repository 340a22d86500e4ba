#include "service/service.h"

#include <unistd.h>

#include <memory>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "cross_region/shipper.h"
#include "pipeline/check.h"
#include "service/source_runner.h"
#include "storage/durable_file.h"

namespace ferry::service {

namespace {

// One runner per stream: a PostgreSQL source with a logical slot has two.
std::vector<config::SourceConfig> RunnerConfigs(const std::vector<config::SourceConfig>& sources) {
  std::vector<config::SourceConfig> out;
  for (const config::SourceConfig& sc : sources) {
    out.push_back(sc);
    if (sc.kind == "postgres" && !sc.logical_slot.empty()) {
      out.push_back(sc);
      out.back().kind = kPgChangesKind;
    }
  }
  return out;
}

}  // namespace


Service::Service(config::Config config)
    : config_(std::move(config)), disk_guard_(config_.archive_path, config_.min_free_percent / 100.0) {}



absl::StatusOr<std::unique_ptr<Service>> Service::Create(const config::Config& config) {
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
  for (const config::SourceConfig& sc : RunnerConfigs(config.sources)) s->runners_.push_back(std::make_unique<SourceRunner>(sc));
  return s;
}

Service::~Service() {
  Stop();
  for (SourceRunner* r : Runners()) JoinRunner(r);
}

std::vector<SourceRunner*> Service::Runners() {
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

// Whether two configs of one source stream the same way (else a reload restarts it).
bool SameSource(const config::SourceConfig& a, const config::SourceConfig& b) {
  return a.kind == b.kind && a.conninfo == b.conninfo && a.physical_slot == b.physical_slot &&
         a.application_name == b.application_name && a.address == b.address && a.redis.user == b.redis.user &&
         a.redis.password == b.redis.password && a.ack == b.ack && a.scheduled_backups == b.scheduled_backups &&
         a.full_backup_every == b.full_backup_every && a.incremental_every == b.incremental_every &&
         a.snapshot_every == b.snapshot_every && a.status_interval_ms == b.status_interval_ms &&
         a.down_after == b.down_after && a.logical_slot == b.logical_slot &&
         a.logical_slot_failover == b.logical_slot_failover && a.publication == b.publication &&
         a.publication_tables == b.publication_tables && a.commit_delay == b.commit_delay &&
         a.commit_delay_auto == b.commit_delay_auto &&
         a.repl_timeout == b.repl_timeout;
}

}  // namespace

void Service::Reload(const config::Config& next) {
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
  const std::vector<config::SourceConfig> wanted = RunnerConfigs(next.sources);
  std::vector<const config::SourceConfig*> start;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    for (auto& r : runners_) {
      if (r->retired) continue;
      bool keep = false;
      // A source that stopped on a fatal error starts again on a reload, as after a restart.
      for (const config::SourceConfig& sc : wanted) {
        keep = keep || (sc.name == r->config->name && SameSource(sc, *r->config) && !r->ended);
      }
      if (!keep) {
        r->retired = true;
        retire.push_back(r.get());
      }
    }
    for (const config::SourceConfig& sc : wanted) {
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
  for (const config::SourceConfig* sc : start) {
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






}  // namespace ferry::service
