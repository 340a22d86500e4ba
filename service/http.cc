// /healthz, /metrics and /status: what they answer (rendered from a ServiceState) and the endpoint serving them.
#include "service/http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <openssl/crypto.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "pipeline/batcher.h"
#include "pipeline/check.h"

namespace ferry::service {
namespace {

// A Prometheus label value: backslash, quote and newline escaped.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::vector<std::string> Unhealthy(const ServiceState& state) {
  std::vector<std::string> why;
  for (const SourceState& s : state.sources) {
    if (!s.up && s.down_seconds > s.down_after_seconds) {
      why.push_back(absl::StrCat("source ", s.name, " down for ", static_cast<int64_t>(s.down_seconds), " s"));
    }
  }
  if (state.archive_free_fraction < state.min_free_fraction) {
    why.push_back(absl::StrCat("archive file system ", static_cast<int>(state.archive_free_fraction * 100),
                               " % free, under min_free_percent: writing and acknowledging are held"));
  }
  if (state.last_drill.has_value() && !state.last_drill->ok()) {
    for (const restore::SourceDrill& d : state.last_drill->sources) {
      for (const restore::DrillCheck& c : d.checks) {
        if (!c.ok) {
          why.push_back(absl::StrCat("last drill failed: source ", d.source, " check ", c.name, ": ", c.detail,
                                     "; fix it and the next drill (retried from a minute on) clears this"));
        }
      }
    }
  }
  for (const std::string& d : state.archive_damage) {
    why.push_back(absl::StrCat("archive damaged: ", d,
                               "; restores that need it refuse (ferry verify lists every spot; restore to a point "
                               "before it or from a backup after it)"));
  }
  return why;
}

namespace {

// Prometheus text, family by family.
class Metrics {
 public:
  // A family's HELP and TYPE lines; its samples follow.
  void Header(const char* name, const char* type, const char* help) {
    absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  // One family: HELP/TYPE, then a sample per item that `include` admits, labelled by `labels`.
  template <typename Items, typename Include, typename Labels, typename Value>
  void Family(const char* name, const char* type, const char* help, const Items& items, Include include,
              Labels labels, Value value) {
    Header(name, type, help);
    for (const auto& item : items) {
      if (include(item)) absl::StrAppend(&out_, name, "{", labels(item), "} ", value(item), "\n");
    }
  }
  // A family of one sample without labels.
  template <typename Value>
  void Single(const char* name, const char* type, const char* help, const Value& value) {
    Header(name, type, help);
    absl::StrAppend(&out_, name, " ", value, "\n");
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

std::string SourceLabels(const SourceState& s) {
  return absl::StrCat("source=\"", Label(s.name), "\",kind=\"", s.kind, "\"");
}

// A family with a sample per source.
template <typename Value>
void PerSource(Metrics& m, const ServiceState& state, const char* name, const char* type, const char* help,
               Value value) {
  m.Family(name, type, help, state.sources, [](const SourceState&) { return true; }, SourceLabels, value);
}

void SourceMetrics(Metrics& m, const ServiceState& state) {
  PerSource(m, state, "ferry_source_up", "gauge", "1 while the source is streaming",
            [](const SourceState& s) { return s.up ? "1" : "0"; });
  PerSource(m, state, "ferry_source_down_seconds", "gauge", "seconds since the source stopped streaming (0 when up)",
            [](const SourceState& s) { return absl::StrCat(s.down_seconds); });
  PerSource(m, state, "ferry_received_position", "gauge", "stream position received (LSN or replication offset)",
            [](const SourceState& s) { return absl::StrCat(s.received); });
  PerSource(m, state, "ferry_synced_position", "gauge", "stream position durable in the archive",
            [](const SourceState& s) { return absl::StrCat(s.synced); });
  PerSource(m, state, "ferry_acked_position", "gauge", "stream position acknowledged upstream",
            [](const SourceState& s) { return absl::StrCat(s.acked); });
  PerSource(m, state, "ferry_lag_bytes", "gauge", "received but not yet durable",
            [](const SourceState& s) { return absl::StrCat(s.received > s.synced ? s.received - s.synced : 0); });
  PerSource(m, state, "ferry_reconnects_total", "counter", "connections lost and retried",
            [](const SourceState& s) { return absl::StrCat(s.reconnects); });
  PerSource(m, state, "ferry_snapshot_age_seconds", "gauge", "age of the newest snapshot (-1: none)",
            [](const SourceState& s) { return absl::StrCat(s.snapshot_age_seconds); });
  PerSource(m, state, "ferry_archive_bytes", "gauge", "bytes the source takes in the archive",
            [](const SourceState& s) { return absl::StrCat(s.archive_bytes); });
  PerSource(m, state, "ferry_frames_total", "counter", "frames written to the archive",
            [](const SourceState& s) { return absl::StrCat(s.frames); });
  PerSource(m, state, "ferry_raw_bytes_total", "counter", "stream bytes written, before compression",
            [](const SourceState& s) { return absl::StrCat(s.raw_bytes); });
  PerSource(m, state, "ferry_stored_bytes_total", "counter", "frame bytes written, after compression",
            [](const SourceState& s) { return absl::StrCat(s.stored_bytes); });
  PerSource(m, state, "ferry_compression_ratio", "gauge", "raw bytes per stored byte",
            [](const SourceState& s) {
              return absl::StrCat(s.stored_bytes == 0 ? 0.0 : static_cast<double>(s.raw_bytes) / s.stored_bytes);
            });
  PerSource(m, state, "ferry_commit_delay_seconds", "gauge",
            "group commits are spaced at least this far apart now (commit_delay)",
            [](const SourceState& s) { return absl::StrCat(s.commit_delay_seconds); });
  PerSource(m, state, "ferry_retention_deleted_total", "counter", "snapshots and files retention removed",
            [](const SourceState& s) { return absl::StrCat(s.retention_deleted); });
}

void ErrorMetrics(Metrics& m, const ServiceState& state) {
  m.Header("ferry_errors_total", "counter", "streaming sessions that ended in an error, by status code");
  for (const SourceState& s : state.sources) {
    for (const auto& [code, n] : s.errors) {
      absl::StrAppend(&m.out(), "ferry_errors_total{source=\"", Label(s.name), "\",kind=\"", s.kind, "\",code=\"",
                      code, "\"} ", n, "\n");
    }
  }
}

// The durable-write (write + fdatasync) latency of each group commit, as a histogram.
void SyncLatencyMetrics(Metrics& m, const ServiceState& state) {
  m.Header("ferry_sync_seconds", "histogram", "duration of each durable group-commit write");
  for (const SourceState& s : state.sources) {
    const std::string labels = SourceLabels(s);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < s.latency_buckets.size(); ++i) {
      cumulative += s.latency_buckets[i];
      const std::string le = i < pipeline::BatcherStats::kBuckets - 1
                                 ? absl::StrCat(pipeline::BatcherStats::kLatencyBounds[i])
                                 : std::string("+Inf");
      absl::StrAppend(&m.out(), "ferry_sync_seconds_bucket{", labels, ",le=\"", le, "\"} ", cumulative, "\n");
    }
    absl::StrAppend(&m.out(), "ferry_sync_seconds_sum{", labels, "} ", s.write_seconds, "\n");
    absl::StrAppend(&m.out(), "ferry_sync_seconds_count{", labels, "} ", s.writes, "\n");
  }
}

// With [kafka]: each shipping source's shipper.
void KafkaMetrics(Metrics& m, const ServiceState& state) {
  auto shipping = [&](const char* name, const char* type, const char* help, auto value) {
    m.Family(name, type, help, state.sources, [](const SourceState& s) { return s.kafka; }, SourceLabels, value);
  };
  shipping("ferry_kafka_connected", "gauge", "1 while the stream's shipper has Kafka",
           [](const SourceState& s) { return s.kafka_connected ? "1" : "0"; });
  shipping("ferry_shipped_position", "gauge", "stream position Kafka acknowledged (acks=all)",
           [](const SourceState& s) { return absl::StrCat(s.shipped); });
  shipping("ferry_ship_lag_bytes", "gauge", "synced but not yet acknowledged by Kafka",
           [](const SourceState& s) { return absl::StrCat(s.synced > s.shipped ? s.synced - s.shipped : 0); });
  shipping("ferry_ship_lag_seconds", "gauge", "age of the last frame Kafka acknowledged, while behind",
           [](const SourceState& s) { return absl::StrCat(s.ship_lag_seconds); });
  shipping("ferry_shipped_frames_total", "counter", "frames Kafka acknowledged",
           [](const SourceState& s) { return absl::StrCat(s.shipped_frames); });
  shipping("ferry_shipped_bytes_total", "counter", "frame bytes sent to Kafka",
           [](const SourceState& s) { return absl::StrCat(s.shipped_bytes); });
  shipping("ferry_snapshots_shipped_total", "counter", "snapshot manifests Kafka acknowledged",
           [](const SourceState& s) { return absl::StrCat(s.snapshots_shipped); });
  shipping("ferry_change_events_shipped_total", "counter", "change events Kafka acknowledged on table topics",
           [](const SourceState& s) { return absl::StrCat(s.change_events_shipped); });
}

// `ferry mirror`: each mirrored stream, and the frame lag across them.
void MirrorMetrics(Metrics& m, const cross_region::MirrorState& mirror) {
  using cross_region::MirroredStream;
  auto mirrored = [&](const char* name, const char* type, const char* help, auto value) {
    m.Family(
        name, type, help, mirror.streams, [](const MirroredStream&) { return true; },
        [](const MirroredStream& s) { return absl::StrCat("source=\"", Label(s.source), "\",stream=\"", s.stream, "\""); },
        value);
  };
  mirrored("ferry_mirror_position", "gauge", "end of the last frame synced in the mirror's archive",
           [](const MirroredStream& s) { return absl::StrCat(s.position); });
  mirrored("ferry_mirror_lag_seconds", "gauge", "primary's arrival to now of the last frame, while behind (0 caught up)",
           [](const MirroredStream& s) { return absl::StrCat(s.lag_seconds); });
  mirrored("ferry_mirror_kafka_lag_messages", "gauge", "messages behind the partition's end (-1 unknown)",
           [](const MirroredStream& s) { return absl::StrCat(s.kafka_lag); });
  mirrored("ferry_mirror_frames_total", "counter", "frames appended",
           [](const MirroredStream& s) { return absl::StrCat(s.frames); });
  mirrored("ferry_mirror_duplicates_total", "counter", "redelivered frames skipped",
           [](const MirroredStream& s) { return absl::StrCat(s.duplicates); });
  m.Header("ferry_mirror_frame_lag_seconds", "summary", "primary arrival to synced here, recent frames");
  absl::StrAppend(&m.out(), "ferry_mirror_frame_lag_seconds{quantile=\"0.5\"} ", mirror.lag_p50, "\n");
  absl::StrAppend(&m.out(), "ferry_mirror_frame_lag_seconds{quantile=\"0.99\"} ", mirror.lag_p99, "\n");
  absl::StrAppend(&m.out(), "ferry_mirror_frame_lag_seconds_count ", mirror.lag_samples, "\n");
  m.Single("ferry_mirror_snapshots_total", "counter", "snapshot manifests imported", mirror.snapshots);
}

void ArchiveMetrics(Metrics& m, const ServiceState& state) {
  m.Single("ferry_archive_free_ratio", "gauge", "free fraction of the archive's file system",
           state.archive_free_fraction);
  m.Single("ferry_archive_damaged_spots", "gauge", "damaged spots the service's read-back verification knows of",
           state.archive_damage.size());
  m.Single("ferry_archive_verified_bytes_total", "counter", "stored bytes read back and checked by the verifier",
           state.verified_bytes);
  m.Single("ferry_archive_verify_sweeps_total", "counter", "passes of the verifier over the whole archive begun",
           state.verify_sweeps);
}

void DrillMetrics(Metrics& m, const restore::DrillReport& d) {
  m.Single("ferry_drill_last_run_timestamp_seconds", "gauge", "when the last restore drill started",
           static_cast<double>(d.started) / 1e6);
  auto per_source = [&](const char* name, const char* help, auto value) {
    m.Family(name, "gauge", help, d.sources, [](const restore::SourceDrill&) { return true; },
             [](const restore::SourceDrill& s) { return absl::StrCat("source=\"", Label(s.source), "\""); }, value);
  };
  per_source("ferry_drill_success", "1 when every check of the last drill passed for the source",
             [](const restore::SourceDrill& s) { return s.ok() ? 1 : 0; });
  per_source("ferry_drill_rto_seconds", "last drill: restore start to a server answering at the target",
             [](const restore::SourceDrill& s) { return s.rto_seconds; });
  per_source("ferry_drill_rpo_seconds", "last drill: target instant minus the point reached",
             [](const restore::SourceDrill& s) { return s.rpo_seconds; });
}

}  // namespace

std::string MetricsText(const ServiceState& state) {
  Metrics m;
  SourceMetrics(m, state);
  ErrorMetrics(m, state);
  SyncLatencyMetrics(m, state);
  if (!state.kafka_bootstrap.empty()) KafkaMetrics(m, state);
  if (state.mirror.has_value()) MirrorMetrics(m, *state.mirror);
  ArchiveMetrics(m, state);
  if (state.last_drill.has_value()) DrillMetrics(m, *state.last_drill);
  m.Single("ferry_healthy", "gauge", "1 when /healthz answers 200", Unhealthy(state).empty() ? 1 : 0);
  return std::move(m.out());
}

namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void WriteKafka(JsonWriter& w, const ServiceState& state) {
  w.Key("kafka");
  w.StartObject();
  w.Key("bootstrap");
  w.String(state.kafka_bootstrap.c_str());
  w.Key("topic_prefix");
  w.String(state.kafka_topic_prefix.c_str());
  w.EndObject();
}

void WriteMirroredStream(JsonWriter& w, const cross_region::MirroredStream& s) {
  w.StartObject();
  w.Key("source");
  w.String(s.source.c_str());
  w.Key("stream");
  w.String(s.stream.c_str());
  w.Key("epoch");
  w.Uint(s.epoch);
  w.Key("position");
  w.Uint64(s.position);
  w.Key("frames");
  w.Uint64(s.frames);
  w.Key("duplicates");
  w.Uint64(s.duplicates);
  w.Key("kafka_lag");
  w.Int64(s.kafka_lag);
  w.Key("lag_seconds");
  w.Double(s.lag_seconds);
  w.EndObject();
}

void WriteMirror(JsonWriter& w, const cross_region::MirrorState& mirror) {
  w.Key("mirror");
  w.StartObject();
  w.Key("group_id");
  w.String(mirror.group_id.c_str());
  w.Key("snapshots");
  w.Uint64(mirror.snapshots);
  w.Key("lag_p50_seconds");
  w.Double(mirror.lag_p50);
  w.Key("lag_p99_seconds");
  w.Double(mirror.lag_p99);
  w.Key("streams");
  w.StartArray();
  for (const cross_region::MirroredStream& s : mirror.streams) WriteMirroredStream(w, s);
  w.EndArray();
  w.EndObject();
}

void WriteSource(JsonWriter& w, const SourceState& s) {
  w.StartObject();
  w.Key("name");
  w.String(s.name.c_str());
  w.Key("kind");
  w.String(s.kind.c_str());
  w.Key("up");
  w.Bool(s.up);
  w.Key("down_seconds");
  w.Double(s.down_seconds);
  w.Key("received");
  w.Uint64(s.received);
  w.Key("synced");
  w.Uint64(s.synced);
  w.Key("acked");
  w.Uint64(s.acked);
  w.Key("reconnects");
  w.Uint64(s.reconnects);
  w.Key("snapshot_age_seconds");
  w.Double(s.snapshot_age_seconds);
  w.Key("archive_bytes");
  w.Uint64(s.archive_bytes);
  if (s.kafka) {
    w.Key("shipped");
    w.Uint64(s.shipped);
    w.Key("kafka_connected");
    w.Bool(s.kafka_connected);
  }
  w.EndObject();
}

// region, archive, http, archive_free_ratio, healthy and why not.
void WriteSummary(JsonWriter& w, const ServiceState& state) {
  w.Key("region");
  w.String(state.region.c_str());
  w.Key("archive");
  w.String(state.archive_path.c_str());
  w.Key("http");
  w.String(state.listen.c_str());
  w.Key("archive_free_ratio");
  w.Double(state.archive_free_fraction);
  const std::vector<std::string> why = Unhealthy(state);
  w.Key("healthy");
  w.Bool(why.empty());
  w.Key("unhealthy_because");
  w.StartArray();
  for (const std::string& r : why) w.String(r.c_str());
  w.EndArray();
}

// archive_damage, verified_bytes and last_drill.
void WriteChecks(JsonWriter& w, const ServiceState& state) {
  w.Key("archive_damage");
  w.StartArray();
  for (const std::string& d : state.archive_damage) w.String(d.c_str());
  w.EndArray();
  w.Key("verified_bytes");
  w.Uint64(state.verified_bytes);
  w.Key("last_drill");
  if (state.last_drill.has_value()) {
    const std::string drill = restore::DrillJson(*state.last_drill);
    w.RawValue(drill.data(), drill.size(), rapidjson::kObjectType);
  } else {
    w.Null();
  }
}

}  // namespace

std::string StatusJson(const ServiceState& state) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  WriteSummary(w, state);
  if (!state.kafka_bootstrap.empty()) WriteKafka(w, state);
  if (state.mirror.has_value()) WriteMirror(w, *state.mirror);
  w.Key("sources");
  w.StartArray();
  for (const SourceState& s : state.sources) WriteSource(w, s);
  w.EndArray();
  WriteChecks(w, state);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

namespace {

struct Reply {
  unsigned status = 200;
  std::string body;
  const char* type = "text/plain";
};

// What the endpoint answers: GET /healthz, /metrics, /status (with the bearer token, when set).
Reply Answer(const HttpEndpoint::Handler& h, const char* method, const char* url, const char* authorization) {
  if (!h.expected_auth.empty()) {
    // Compared in constant time, so that response timing does not give the token away.
    const std::string got = authorization == nullptr ? "" : authorization;
    if (got.size() != h.expected_auth.size() ||
        CRYPTO_memcmp(got.data(), h.expected_auth.data(), got.size()) != 0) {
      return {401, "a bearer token is required (the service's [http] token_file)\n"};
    }
  }
  if (std::string(method) != "GET" && std::string(method) != "HEAD") return {405, "GET only\n"};
  const std::string path = url;
  if (path == "/healthz") {
    const std::vector<std::string> why = Unhealthy(h.state());
    return {why.empty() ? 200u : 503u, why.empty() ? "ok\n" : absl::StrJoin(why, "\n") + "\n"};
  }
  if (path == "/metrics") return {200, MetricsText(h.state()), "text/plain; version=0.0.4"};
  if (path == "/status") return {200, StatusJson(h.state()) + "\n", "application/json"};
  return {404, "not found: /healthz, /metrics, /status\n"};
}

MHD_Result OnRequest(void* cls, MHD_Connection* connection, const char* url, const char* method,
                     const char* /*version*/, const char* /*upload_data*/, size_t* upload_data_size,
                     void** /*req_cls*/) {
  if (*upload_data_size != 0) {  // a body is not wanted: consume it and answer once it is in
    *upload_data_size = 0;
    return MHD_YES;
  }
  const auto* handler = static_cast<const HttpEndpoint::Handler*>(cls);
  const Reply r = Answer(*handler, method, url,
                         MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION));
  MHD_Response* response =
      MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  (void)MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, r.type);
  const MHD_Result queued = MHD_queue_response(connection, r.status, response);
  MHD_destroy_response(response);
  return queued;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const std::string& listen, const std::string& token,
                                                                  std::function<ServiceState()> state) {
  FERRY_ASSIGN_OR_RETURN(const config::ListenAddress address, config::ParseListen(listen));
  std::unique_ptr<HttpEndpoint> e(new HttpEndpoint());
  e->handler_.state = std::move(state);
  if (!token.empty()) e->handler_.expected_auth = "Bearer " + token;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(address.port);
  if (int rc = getaddrinfo(address.host.empty() ? nullptr : address.host.c_str(), port.c_str(), &hints, &found);
      rc != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("http.listen ", listen, ": ", gai_strerror(rc)));
  }
  // epoll threads: an idle or slow client is a socket in an epoll set, never a thread held, and
  // is closed after kIdleSeconds; /healthz answers whatever the other connections do.
  unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD;
  if (found->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  e->daemon_ = MHD_start_daemon(flags, 0, nullptr, nullptr, &OnRequest, &e->handler_,
                                MHD_OPTION_SOCK_ADDR, found->ai_addr,
                                MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(kIdleSeconds),
                                MHD_OPTION_CONNECTION_LIMIT, static_cast<unsigned>(kMaxConnections),
                                MHD_OPTION_THREAD_POOL_SIZE, static_cast<unsigned>(kThreads),
                                MHD_OPTION_END);
  freeaddrinfo(found);
  if (e->daemon_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("http.listen ", listen, ": cannot bind (in use?)"));
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(e->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  e->port_ = info != nullptr ? info->port : address.port;
  return e;
}

HttpEndpoint::~HttpEndpoint() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace ferry::service
