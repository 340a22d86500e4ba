#include "cross_region/kafka.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "cross_region/kafka_internal.h"
#include "pipeline/check.h"

namespace ferry::cross_region {

std::string StreamTopic(absl::string_view prefix, absl::string_view source, pipeline::StreamKind kind) {
  return absl::StrCat(prefix, ".", source, ".", pipeline::StreamKindName(kind));
}
std::string ChunkTopic(absl::string_view prefix, absl::string_view source) {
  return absl::StrCat(prefix, ".", source, ".chunks");
}
std::string ManifestTopic(absl::string_view prefix, absl::string_view source) {
  return absl::StrCat(prefix, ".", source, ".snapshots");
}

absl::StatusOr<int> ParseMockBrokers(absl::string_view brokers) {
  if (!absl::ConsumePrefix(&brokers, "mock:")) return absl::NotFoundError("not a mock cluster");
  int n = 0;
  if (!absl::SimpleAtoi(brokers, &n) || n < 1 || n > 16) {
    return absl::InvalidArgumentError(absl::StrCat("expected \"mock:N\" with N from 1 to 16, got \"mock:", brokers, "\""));
  }
  return n;
}

absl::Status SetProperty(rd_kafka_conf_t* conf, const std::string& key, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
    return absl::InvalidArgumentError(absl::StrCat("kafka property ", key, ": ", err));
  }
  return absl::OkStatus();
}

absl::StatusOr<rd_kafka_conf_t*> NewConf(const KafkaOptions& options,
                                         const std::map<std::string, std::string>& defaults) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set_all = [&]() -> absl::Status {
    FERRY_RETURN_IF_ERROR(SetProperty(conf, "bootstrap.servers", options.brokers));
    // librdkafka's own log lines (a broker disconnecting, ...) are expected while Kafka is
    // away and would repeat every second: debug level. What matters surfaces as ferry's own
    // events (kafka_unavailable, with the error).
    rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t*, int level, const char* fac, const char* buf) {
      if (level <= 2) {
        spdlog::warn("event=kafka_log facility={} message=\"{}\"", fac, buf);
      } else {
        spdlog::debug("event=kafka_log facility={} message=\"{}\"", fac, buf);
      }
    });
    for (const auto& [k, v] : defaults) FERRY_RETURN_IF_ERROR(SetProperty(conf, k, v));
    for (const auto& [k, v] : options.properties) FERRY_RETURN_IF_ERROR(SetProperty(conf, k, v));
    return absl::OkStatus();
  };
  if (absl::Status st = set_all(); !st.ok()) {
    rd_kafka_conf_destroy(conf);
    return st;
  }
  return conf;
}

absl::StatusOr<KafkaHandle> NewClient(rd_kafka_type_t type, rd_kafka_conf_t* conf) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof(err));
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(absl::StrCat("kafka client: ", err));
  }
  return KafkaHandle(rk);
}

std::optional<std::string> HeaderValue(const rd_kafka_message_t* m, const char* name) {
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) return std::nullopt;
  const void* value = nullptr;
  size_t size = 0;
  if (rd_kafka_header_get_last(hdrs, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR) return std::nullopt;
  return std::string(static_cast<const char*>(value), size);
}

absl::StatusOr<uint64_t> HeaderNumber(const rd_kafka_message_t* m, const char* name) {
  auto v = HeaderValue(m, name);
  uint64_t n = 0;
  if (!v.has_value() || !absl::SimpleAtoi(*v, &n)) {
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": header ", name,
                                            v.has_value() ? " is not a number" : " is missing",
                                            " (not written by ferry?)"));
  }
  return n;
}

std::string Where(const rd_kafka_message_t* m) {
  return absl::StrCat(m->rkt != nullptr ? rd_kafka_topic_name(m->rkt) : "?", "[", m->partition, "]@", m->offset);
}

absl::Status KafkaError(absl::string_view what, rd_kafka_resp_err_t err) {
  const std::string msg = absl::StrCat(what, ": ", rd_kafka_err2str(err));
  switch (err) {
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
      return absl::UnavailableError(msg);
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
      return absl::PermissionDeniedError(msg);
    case RD_KAFKA_RESP_ERR__FATAL:
      // The idempotent producer lost its sequence: this client is done, a new one may start.
      return absl::AbortedError(msg);
    default:
      // Refused for a reason that waiting alone does not fix (settings, topic configuration,
      // message size, an unknown topic): the message says which.
      return absl::FailedPreconditionError(msg);
  }
}

absl::StatusOr<std::pair<int64_t, int64_t>> Watermarks(const KafkaOptions& options, const std::string& topic,
                                                       int32_t partition, int timeout_ms) {
  FERRY_ASSIGN_OR_RETURN(rd_kafka_conf_t * conf, NewConf(options, {}));
  FERRY_ASSIGN_OR_RETURN(KafkaHandle rk, NewClient(RD_KAFKA_PRODUCER, conf));
  int64_t low = 0, high = 0;
  rd_kafka_resp_err_t err =
      rd_kafka_query_watermark_offsets(rk.get(), topic.c_str(), partition, &low, &high, timeout_ms);
  if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
      err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
    return std::make_pair(int64_t{0}, int64_t{0});  // nothing was ever written there
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    // A cluster that does not answer in time is "unavailable", whatever the code says.
    return absl::UnavailableError(
        absl::StrCat("kafka ", options.brokers, ": watermarks of ", topic, ": ", rd_kafka_err2str(err)));
  }
  return std::make_pair(low, high);
}

absl::Status ReadPartition(const KafkaOptions& options, const std::string& topic, int32_t partition,
                           int64_t from, int timeout_ms,
                           const std::function<bool(const rd_kafka_message_t*)>& fn,
                           const std::function<bool()>& cancelled) {
  FERRY_ASSIGN_OR_RETURN(auto marks, Watermarks(options, topic, partition, timeout_ms));
  if (from == kLastMessage) from = marks.second - 1;
  from = std::max(from, marks.first);
  if (from >= marks.second) return absl::OkStatus();
  FERRY_ASSIGN_OR_RETURN(rd_kafka_conf_t * conf,
                         NewConf(options, {{"group.id", absl::StrCat("ferry-reader-", getpid())},
                                           {"enable.auto.commit", "false"},
                                           {"enable.partition.eof", "true"}}));
  FERRY_ASSIGN_OR_RETURN(KafkaHandle rk, NewClient(RD_KAFKA_CONSUMER, conf));
  PartitionList list(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), partition)->offset = from;
  if (rd_kafka_resp_err_t err = rd_kafka_assign(rk.get(), list.get()); err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return KafkaError(absl::StrCat("kafka: assign ", topic), err);
  }
  const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  int64_t next = from;
  while (next < marks.second) {
    if (cancelled && cancelled()) return absl::CancelledError("stopping");
    if (absl::Now() > deadline) {
      return absl::UnavailableError(absl::StrCat("kafka ", options.brokers, ": reading ", topic, " timed out at offset ",
                                                 next, " of ", marks.second));
    }
    Message m(rd_kafka_consumer_poll(rk.get(), 100));
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) break;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (m->err == RD_KAFKA_RESP_ERR__TRANSPORT || m->err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) continue;
      return KafkaError(absl::StrCat("kafka: reading ", topic), m->err);
    }
    next = m->offset + 1;
    if (!fn(m.get())) break;
  }
  rd_kafka_consumer_close(rk.get());
  return absl::OkStatus();
}

struct MockCluster::Impl {
  KafkaHandle owner;  // the handle the cluster is registered with
  rd_kafka_mock_cluster_t* cluster = nullptr;
  ~Impl() {
    // The cluster goes before the handle it belongs to (librdkafka's rule).
    if (cluster != nullptr) rd_kafka_mock_cluster_destroy(cluster);
  }
};

MockCluster::MockCluster(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  bootstrap_ = rd_kafka_mock_cluster_bootstraps(impl_->cluster);
}

MockCluster::~MockCluster() = default;

absl::StatusOr<std::unique_ptr<MockCluster>> MockCluster::Start(int brokers) {
  auto impl = std::make_unique<Impl>();
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The owner handle never connects anywhere; without this it would warn about it.
  FERRY_RETURN_IF_ERROR(SetProperty(conf, "log_level", "2"));
  FERRY_ASSIGN_OR_RETURN(impl->owner, NewClient(RD_KAFKA_PRODUCER, conf));
  impl->cluster = rd_kafka_mock_cluster_new(impl->owner.get(), brokers);
  if (impl->cluster == nullptr) return absl::UnavailableError("kafka mock cluster: could not start (ports?)");
  return std::unique_ptr<MockCluster>(new MockCluster(std::move(impl)));
}

absl::Status MockCluster::SetBrokerDown(int broker) {
  if (rd_kafka_resp_err_t err = rd_kafka_mock_broker_set_down(impl_->cluster, broker); err) {
    return KafkaError(absl::StrCat("mock broker ", broker, " down"), err);
  }
  return absl::OkStatus();
}

absl::Status MockCluster::SetLeader(const std::string& topic, int32_t partition, int broker) {
  if (rd_kafka_resp_err_t err = rd_kafka_mock_partition_set_leader(impl_->cluster, topic.c_str(), partition, broker);
      err) {
    return KafkaError(absl::StrCat("mock ", topic, "[", partition, "] leader ", broker), err);
  }
  return absl::OkStatus();
}

void MockCluster::FailNextProduceRequests(int count) {
  constexpr int16_t kProduceApiKey = 0;
  std::vector<rd_kafka_resp_err_t> errs(count, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
  rd_kafka_mock_push_request_errors_array(impl_->cluster, kProduceApiKey, errs.size(), errs.data());
}

}  // namespace ferry::cross_region
