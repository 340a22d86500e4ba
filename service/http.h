// The service's HTTP endpoint (libmicrohttpd, epoll): /healthz, /metrics (Prometheus text format) and
// /status (JSON), all rendered from one ServiceState the service assembles per request.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/optional.h"
#include "config/config.h"
#include "cross_region/mirror.h"
#include "restore/drill.h"

struct MHD_Daemon;

namespace ferry::service {

struct SourceState {
  std::string name, kind;
  bool up = false;              // streaming right now
  double down_seconds = 0;      // how long it has not been streaming (0 when up)
  double down_after_seconds = 5;
  uint64_t received = 0, synced = 0, acked = 0;  // stream positions (LSN or replication offset)
  uint64_t reconnects = 0;
  double snapshot_age_seconds = -1;  // the newest snapshot's age; -1 when there is none
  uint64_t archive_bytes = 0;        // the source's streams and snapshots on disk
  // From its batcher (this run of the service): frames, bytes before and after compression,
  // group commits and the histogram of their durable-write latency (non-cumulative counts
  // per BatcherStats::kLatencyBounds, then +Inf).
  uint64_t frames = 0, raw_bytes = 0, stored_bytes = 0, writes = 0;
  double write_seconds = 0;
  std::vector<uint64_t> latency_buckets;
  double commit_delay_seconds = 0;  // the commit_delay its batcher uses now ("auto" decides it)
  uint64_t retention_deleted = 0;  // snapshots and files retention removed (this run)
  std::map<std::string, uint64_t> errors;  // streaming sessions that ended in error, by status code
  // With [kafka]: the stream's shipper (this run). shipped = end of the last frame Kafka
  // acknowledged (acks=all); ship_lag_seconds = age of that frame when it was (0 when all is).
  bool kafka = false;
  bool kafka_connected = false;
  uint64_t shipped = 0, shipped_frames = 0, shipped_bytes = 0, snapshots_shipped = 0;
  uint64_t change_events_shipped = 0;  // pg-changes: Debezium messages Kafka acknowledged
  double ship_lag_seconds = 0;
};

struct ServiceState {
  std::string region, archive_path, listen;
  std::vector<SourceState> sources;
  double archive_free_fraction = 1;  // of the archive's file system
  double min_free_fraction = 0.05;   // under it, writing and acknowledging are held
  absl::optional<restore::DrillReport> last_drill;
  std::vector<std::string> archive_damage;  // ArchiveVerifier::Damage()
  uint64_t verified_bytes = 0;              // read back by the verifier since the start
  uint64_t verify_sweeps = 0;
  std::string kafka_bootstrap;  // with [kafka]: the brokers (a mock cluster's own address)
  std::string kafka_topic_prefix;
  absl::optional<cross_region::MirrorState> mirror;  // set by `ferry mirror`
};

// Why the service is unhealthy (empty: healthy): a source down longer than its
// down_after, the archive's file system under its min_free_percent (writing held), the last
// drill failed (each failed check with its reason), damage the verifier found.
std::vector<std::string> Unhealthy(const ServiceState& state);
std::string MetricsText(const ServiceState& state);
std::string StatusJson(const ServiceState& state);

class HttpEndpoint {
 public:
  // Binds `listen` ("host:port"; port 0 picks a free one) now — an address in use is an error
  // at start-up, not later — and serves on threads of its own until destroyed. With a
  // token, every request must carry "Authorization: Bearer <token>" (else 401).
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& listen, const std::string& token,
                                                             std::function<ServiceState()> state);
  ~HttpEndpoint();
  int port() const { return port_; }

  // Idle and slow clients cannot starve the endpoint: connections wait in epoll sets (no thread
  // per connection), a connection idle this long is closed, at most this many are open.
  static constexpr int kIdleSeconds = 10;
  static constexpr int kMaxConnections = 8192;
  static constexpr int kThreads = 2;  // each answers from its own epoll set

  struct Handler {
    std::function<ServiceState()> state;
    std::string expected_auth;  // "Bearer <token>", or empty: no token
  };

 private:
  HttpEndpoint() = default;
  Handler handler_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
};

}  // namespace ferry::service
