#include "tools/service/http.h"

#include <httplib.h>
#include <openssl/crypto.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "pipeline/batcher.h"
#include "pipeline/check.h"

namespace ferry::tools {
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
    for (const SourceDrill& d : state.last_drill->sources) {
      for (const DrillCheck& c : d.checks) {
        if (!c.ok) why.push_back(absl::StrCat("last drill failed: source ", d.source, " check ", c.name));
      }
    }
  }
  return why;
}

std::string MetricsText(const ServiceState& state) {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  };
  // One family: HELP/TYPE, then a sample per item that `include` admits, labelled by `labels`.
  auto family = [&](const char* name, const char* type, const char* help, const auto& items, auto include,
                    auto labels, auto value) {
    metric(name, type, help);
    for (const auto& item : items) {
      if (include(item)) absl::StrAppend(&out, name, "{", labels(item), "} ", value(item), "\n");
    }
  };
  auto source_labels = [](const SourceState& s) {
    return absl::StrCat("source=\"", Label(s.name), "\",kind=\"", s.kind, "\"");
  };
  auto per_source = [&](const char* name, const char* type, const char* help, auto value) {
    family(name, type, help, state.sources, [](const SourceState&) { return true; }, source_labels, value);
  };
  per_source("ferry_source_up", "gauge", "1 while the source is streaming",
             [](const SourceState& s) { return s.up ? "1" : "0"; });
  per_source("ferry_source_down_seconds", "gauge", "seconds since the source stopped streaming (0 when up)",
             [](const SourceState& s) { return absl::StrCat(s.down_seconds); });
  per_source("ferry_received_position", "gauge", "stream position received (LSN or replication offset)",
             [](const SourceState& s) { return absl::StrCat(s.received); });
  per_source("ferry_synced_position", "gauge", "stream position durable in the archive",
             [](const SourceState& s) { return absl::StrCat(s.synced); });
  per_source("ferry_acked_position", "gauge", "stream position acknowledged upstream",
             [](const SourceState& s) { return absl::StrCat(s.acked); });
  per_source("ferry_lag_bytes", "gauge", "received but not yet durable",
             [](const SourceState& s) { return absl::StrCat(s.received > s.synced ? s.received - s.synced : 0); });
  per_source("ferry_reconnects_total", "counter", "connections lost and retried",
             [](const SourceState& s) { return absl::StrCat(s.reconnects); });
  per_source("ferry_snapshot_age_seconds", "gauge", "age of the newest snapshot (-1: none)",
             [](const SourceState& s) { return absl::StrCat(s.snapshot_age_seconds); });
  per_source("ferry_archive_bytes", "gauge", "bytes the source takes in the archive",
             [](const SourceState& s) { return absl::StrCat(s.archive_bytes); });
  per_source("ferry_frames_total", "counter", "frames written to the archive",
             [](const SourceState& s) { return absl::StrCat(s.frames); });
  per_source("ferry_raw_bytes_total", "counter", "stream bytes written, before compression",
             [](const SourceState& s) { return absl::StrCat(s.raw_bytes); });
  per_source("ferry_stored_bytes_total", "counter", "frame bytes written, after compression",
             [](const SourceState& s) { return absl::StrCat(s.stored_bytes); });
  per_source("ferry_compression_ratio", "gauge", "raw bytes per stored byte",
             [](const SourceState& s) {
               return absl::StrCat(s.stored_bytes == 0 ? 0.0 : static_cast<double>(s.raw_bytes) / s.stored_bytes);
             });
  per_source("ferry_commit_delay_seconds", "gauge", "group commits are spaced at least this far apart now (commit_delay)",
             [](const SourceState& s) { return absl::StrCat(s.commit_delay_seconds); });
  per_source("ferry_retention_deleted_total", "counter", "snapshots and files retention removed",
             [](const SourceState& s) { return absl::StrCat(s.retention_deleted); });
  metric("ferry_errors_total", "counter", "streaming sessions that ended in an error, by status code");
  for (const SourceState& s : state.sources) {
    for (const auto& [code, n] : s.errors) {
      absl::StrAppend(&out, "ferry_errors_total{source=\"", Label(s.name), "\",kind=\"", s.kind, "\",code=\"", code,
                      "\"} ", n, "\n");
    }
  }
  // The durable-write (write + fdatasync) latency of each group commit, as a histogram.
  metric("ferry_sync_seconds", "histogram", "duration of each durable group-commit write");
  for (const SourceState& s : state.sources) {
    const std::string labels = absl::StrCat("source=\"", Label(s.name), "\",kind=\"", s.kind, "\"");
    uint64_t cumulative = 0;
    for (size_t i = 0; i < s.latency_buckets.size(); ++i) {
      cumulative += s.latency_buckets[i];
      const std::string le = i < pipeline::BatcherStats::kBuckets - 1
                                 ? absl::StrCat(pipeline::BatcherStats::kLatencyBounds[i])
                                 : std::string("+Inf");
      absl::StrAppend(&out, "ferry_sync_seconds_bucket{", labels, ",le=\"", le, "\"} ", cumulative, "\n");
    }
    absl::StrAppend(&out, "ferry_sync_seconds_sum{", labels, "} ", s.write_seconds, "\n");
    absl::StrAppend(&out, "ferry_sync_seconds_count{", labels, "} ", s.writes, "\n");
  }
  if (!state.kafka_bootstrap.empty()) {
    auto shipping = [&](const char* name, const char* type, const char* help, auto value) {
      family(name, type, help, state.sources, [](const SourceState& s) { return s.kafka; }, source_labels, value);
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
  if (state.mirror.has_value()) {
    const cross_region::MirrorState& m = *state.mirror;
    auto mirrored = [&](const char* name, const char* type, const char* help, auto value) {
      family(
          name, type, help, m.streams, [](const cross_region::MirroredStream&) { return true; },
          [](const cross_region::MirroredStream& s) {
            return absl::StrCat("source=\"", Label(s.source), "\",stream=\"", s.stream, "\"");
          },
          value);
    };
    mirrored("ferry_mirror_position", "gauge", "end of the last frame synced in the mirror's archive",
             [](const cross_region::MirroredStream& s) { return absl::StrCat(s.position); });
    mirrored("ferry_mirror_lag_seconds", "gauge", "primary's arrival to now of the last frame, while behind (0 caught up)",
             [](const cross_region::MirroredStream& s) { return absl::StrCat(s.lag_seconds); });
    mirrored("ferry_mirror_kafka_lag_messages", "gauge", "messages behind the partition's end (-1 unknown)",
             [](const cross_region::MirroredStream& s) { return absl::StrCat(s.kafka_lag); });
    mirrored("ferry_mirror_frames_total", "counter", "frames appended",
             [](const cross_region::MirroredStream& s) { return absl::StrCat(s.frames); });
    mirrored("ferry_mirror_duplicates_total", "counter", "redelivered frames skipped",
             [](const cross_region::MirroredStream& s) { return absl::StrCat(s.duplicates); });
    metric("ferry_mirror_frame_lag_seconds", "summary", "primary arrival to synced here, recent frames");
    absl::StrAppend(&out, "ferry_mirror_frame_lag_seconds{quantile=\"0.5\"} ", m.lag_p50, "\n");
    absl::StrAppend(&out, "ferry_mirror_frame_lag_seconds{quantile=\"0.99\"} ", m.lag_p99, "\n");
    absl::StrAppend(&out, "ferry_mirror_frame_lag_seconds_count ", m.lag_samples, "\n");
    metric("ferry_mirror_snapshots_total", "counter", "snapshot manifests imported");
    absl::StrAppend(&out, "ferry_mirror_snapshots_total ", m.snapshots, "\n");
  }
  metric("ferry_archive_free_ratio", "gauge", "free fraction of the archive's file system");
  absl::StrAppend(&out, "ferry_archive_free_ratio ", state.archive_free_fraction, "\n");
  if (state.last_drill.has_value()) {
    const DrillReport& d = *state.last_drill;
    metric("ferry_drill_last_run_timestamp_seconds", "gauge", "when the last restore drill started");
    absl::StrAppend(&out, "ferry_drill_last_run_timestamp_seconds ", static_cast<double>(d.started) / 1e6, "\n");
    metric("ferry_drill_success", "gauge", "1 when every check of the last drill passed for the source");
    for (const SourceDrill& s : d.sources) {
      absl::StrAppend(&out, "ferry_drill_success{source=\"", Label(s.source), "\"} ", s.ok() ? 1 : 0, "\n");
    }
    metric("ferry_drill_rto_seconds", "gauge", "last drill: restore start to a server answering at the target");
    for (const SourceDrill& s : d.sources) {
      absl::StrAppend(&out, "ferry_drill_rto_seconds{source=\"", Label(s.source), "\"} ", s.rto_seconds, "\n");
    }
    metric("ferry_drill_rpo_seconds", "gauge", "last drill: target instant minus the point reached");
    for (const SourceDrill& s : d.sources) {
      absl::StrAppend(&out, "ferry_drill_rpo_seconds{source=\"", Label(s.source), "\"} ", s.rpo_seconds, "\n");
    }
  }
  metric("ferry_healthy", "gauge", "1 when /healthz answers 200");
  absl::StrAppend(&out, "ferry_healthy ", Unhealthy(state).empty() ? 1 : 0, "\n");
  return out;
}

std::string StatusJson(const ServiceState& state) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
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
  if (!state.kafka_bootstrap.empty()) {
    w.Key("kafka");
    w.StartObject();
    w.Key("bootstrap");
    w.String(state.kafka_bootstrap.c_str());
    w.Key("topic_prefix");
    w.String(state.kafka_topic_prefix.c_str());
    w.EndObject();
  }
  if (state.mirror.has_value()) {
    w.Key("mirror");
    w.StartObject();
    w.Key("group_id");
    w.String(state.mirror->group_id.c_str());
    w.Key("snapshots");
    w.Uint64(state.mirror->snapshots);
    w.Key("lag_p50_seconds");
    w.Double(state.mirror->lag_p50);
    w.Key("lag_p99_seconds");
    w.Double(state.mirror->lag_p99);
    w.Key("streams");
    w.StartArray();
    for (const cross_region::MirroredStream& s : state.mirror->streams) {
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
    w.EndArray();
    w.EndObject();
  }
  w.Key("sources");
  w.StartArray();
  for (const SourceState& s : state.sources) {
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
  w.EndArray();
  w.Key("last_drill");
  if (state.last_drill.has_value()) {
    const std::string drill = DrillJson(*state.last_drill);
    w.RawValue(drill.data(), drill.size(), rapidjson::kObjectType);
  } else {
    w.Null();
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

absl::StatusOr<ListenAddress> ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  ListenAddress a;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &a.port) || a.port < 0 ||
      a.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http.listen \"", listen, "\": expected host:port"));
  }
  a.host = listen.substr(0, colon);
  return a;
}

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const std::string& listen, const std::string& token,
                                                                  std::function<ServiceState()> state) {
  FERRY_ASSIGN_OR_RETURN(const ListenAddress address, ParseListen(listen));
  const std::string& host = address.host;
  const int port = address.port;
  std::unique_ptr<HttpEndpoint> e(new HttpEndpoint());
  e->server_ = std::make_unique<httplib::Server>();
  if (!token.empty()) {
    const std::string expected = "Bearer " + token;
    e->server_->set_pre_routing_handler([expected](const httplib::Request& req, httplib::Response& res) {
      // Compared in constant time, so that response timing does not give the token away.
      const std::string got = req.get_header_value("Authorization");
      if (got.size() == expected.size() && CRYPTO_memcmp(got.data(), expected.data(), got.size()) == 0) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      res.status = 401;
      res.set_content("a bearer token is required (the service's [http] token_file)\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    });
  }
  e->server_->Get("/healthz", [state](const httplib::Request&, httplib::Response& res) {
    const std::vector<std::string> why = Unhealthy(state());
    res.status = why.empty() ? 200 : 503;
    res.set_content(why.empty() ? "ok\n" : absl::StrJoin(why, "\n") + "\n", "text/plain");
  });
  e->server_->Get("/metrics", [state](const httplib::Request&, httplib::Response& res) {
    res.set_content(MetricsText(state()), "text/plain; version=0.0.4");
  });
  e->server_->Get("/status", [state](const httplib::Request&, httplib::Response& res) {
    res.set_content(StatusJson(state()) + "\n", "application/json");
  });
  e->port_ = port == 0 ? e->server_->bind_to_any_port(host) : (e->server_->bind_to_port(host, port) ? port : -1);
  if (e->port_ <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("http.listen ", listen, ": cannot bind (in use?)"));
  }
  httplib::Server* server = e->server_.get();
  e->thread_ = std::thread([server] { server->listen_after_bind(); });
  return e;
}

HttpEndpoint::~HttpEndpoint() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace ferry::tools
