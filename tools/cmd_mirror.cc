// ferry mirror: the standby region's consumer (cross_region/mirror.h) as a process, with its
// own /metrics; and ferry kafka-mock: librdkafka's mock cluster as a process of its own.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include <spdlog/spdlog.h>

#include "config/config.h"
#include "cross_region/apply/pg_apply.h"
#include "cross_region/apply/redis_standby.h"
#include "cross_region/kafka.h"
#include "cross_region/mirror.h"
#include "pipeline/check.h"
#include "service/http.h"
#include "tools/commands.h"

namespace ferry::tools {
namespace {

// Blocks SIGTERM and SIGINT in every thread started after it; WaitForStop returns when one
// arrives (or when Wake is called).
class StopSignals {
 public:
  StopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGUSR1);  // Wake
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  int WaitForStop() {
    int sig = 0;
    sigwait(&set_, &sig);
    return sig;
  }
  static void Wake(std::thread& t) { pthread_kill(t.native_handle(), SIGUSR1); }

 private:
  sigset_t set_;
};

// [mirror] sources must name what to mirror, and [kafka] brokers the primary region's cluster.
absl::Status CheckMirrorConfig(const std::string& config_path, const config::Config& config) {
  if (config.mirror_sources.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": [mirror] sources is missing: name the primary region's sources to mirror"));
  }
  if (cross_region::ParseMockBrokers(config.kafka_brokers).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": [kafka] brokers = \"", config.kafka_brokers,
        "\" would start an empty cluster of the mirror's own; use the primary's bootstrap "
        "address (its /status kafka.bootstrap, or what ferry kafka-mock printed)"));
  }
  return absl::OkStatus();
}

cross_region::MirrorOptions MirrorOptionsFor(const config::Config& config) {
  cross_region::MirrorOptions o;
  o.kafka.brokers = config.kafka_brokers;
  o.kafka.topic_prefix = config.kafka_topic_prefix;
  o.kafka.properties = config.kafka_properties;
  o.archive_path = config.archive_path;
  o.writer = config.writer;
  o.segment_bytes = config.segment_bytes;
  o.sources = config.mirror_sources;
  o.group_id = config.mirror_group_id;
  return o;
}

// The mirror's /metrics and /status on [http] listen (none without it).
absl::StatusOr<std::unique_ptr<service::HttpEndpoint>> StartHttp(const config::Config& config, cross_region::Mirror& mirror) {
  if (config.http_listen.empty()) return nullptr;
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<service::HttpEndpoint> http,
                         service::HttpEndpoint::Start(config.http_listen, config.http_token, [&config, &mirror] {
                           service::ServiceState st;
                           st.region = config.region;
                           st.archive_path = config.archive_path;
                           st.listen = config.http_listen;
                           st.kafka_bootstrap = config.kafka_brokers;
                           st.kafka_topic_prefix = config.kafka_topic_prefix;
                           st.mirror = mirror.State();
                           return st;
                         }));
  spdlog::info("event=http listen={} port={}", config.http_listen, http->port());
  return http;
}

// [mirror] apply_redis: a standby Redis fed from the mirrored stream (none without it).
absl::StatusOr<std::unique_ptr<cross_region::RedisStandbyFeeder>> StartRedisStandby(const config::Config& config) {
  if (config.mirror_apply_redis.empty()) return nullptr;
  // "host:port", or "source=host:port" when several Redis sources are mirrored.
  cross_region::RedisStandbyOptions ro;
  ro.archive_path = config.archive_path;
  ro.sources = config.mirror_sources;
  ro.standby = config.mirror_apply_redis;
  if (const size_t eq = ro.standby.find('='); eq != std::string::npos) {
    ro.source = ro.standby.substr(0, eq);
    ro.standby = ro.standby.substr(eq + 1);
  }
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<cross_region::RedisStandbyFeeder> standby,
                         cross_region::RedisStandbyFeeder::Start(ro));
  spdlog::info("event=standby_redis_feeder standby={} feeder=127.0.0.1:{}", ro.standby, standby->port());
  return standby;
}

// [mirror] apply_postgres: a database the mirrored change events are applied to (none without it).
std::unique_ptr<cross_region::PgApplier> StartPgStandby(const config::Config& config) {
  if (config.mirror_apply_postgres.empty()) return nullptr;
  cross_region::PgApplyOptions po;
  po.archive_path = config.archive_path;
  po.sources = config.mirror_sources;
  po.conninfo = config.mirror_apply_postgres;
  std::unique_ptr<cross_region::PgApplier> pg_standby = cross_region::PgApplier::Start(po);
  spdlog::info("event=standby_postgres_applier");
  return pg_standby;
}

}  // namespace

int CmdMirror(const std::string& config_path) {
  auto config = config::LoadConfig(config_path);
  if (!config.ok()) return Fail("mirror", config.status());
  if (absl::Status st = CheckMirrorConfig(config_path, *config); !st.ok()) return Fail("mirror", st);
  StopSignals signals;
  auto mirror = cross_region::Mirror::Create(MirrorOptionsFor(*config));
  if (!mirror.ok()) return Fail("mirror", mirror.status());
  auto http = StartHttp(*config, **mirror);
  if (!http.ok()) return Fail("mirror", http.status());
  auto standby = StartRedisStandby(*config);
  if (!standby.ok()) return Fail("mirror", standby.status());
  std::unique_ptr<cross_region::PgApplier> pg_standby = StartPgStandby(*config);
  std::thread watcher([&] {
    const int sig = signals.WaitForStop();
    if (sig == SIGUSR1) return;
    spdlog::info("event=signal signal={} action=stopping", sig);
    (*mirror)->Stop();
  });
  absl::Status st = (*mirror)->Run();
  StopSignals::Wake(watcher);
  watcher.join();
  if (*standby != nullptr) (*standby)->Stop();
  if (pg_standby != nullptr) pg_standby->Stop();
  const cross_region::MirrorState state = (*mirror)->State();
  spdlog::info("event=mirror_stopped frames_lag_p50_s={:.3f} lag_p99_s={:.3f} samples={} snapshots={}", state.lag_p50,
               state.lag_p99, state.lag_samples, state.snapshots);
  http->reset();
  if (!st.ok()) return Fail("mirror", st);
  return 0;
}

int CmdKafkaMock(int brokers) {
  StopSignals signals;
  auto cluster = cross_region::MockCluster::Start(brokers);
  if (!cluster.ok()) return Fail("kafka-mock", cluster.status());
  // stdout is the bootstrap address alone, one line, for scripts; the rest goes to stderr.
  std::printf("%s\n", (*cluster)->bootstrap().c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "ferry kafka-mock: %d brokers at %s (in memory only; stop with SIGTERM)\n", brokers,
               (*cluster)->bootstrap().c_str());
  while (signals.WaitForStop() == SIGUSR1) {
  }
  return 0;
}

}  // namespace ferry::tools
