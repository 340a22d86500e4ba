// The shippers' Kafka producer: settings, produce with back-pressure, delivery reports.
#include "cross_region/producer.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "pipeline/check.h"

namespace ferry::cross_region {

namespace {

// Producer settings for ferry's topics: idempotent (no duplicate or reordering on retries),
// acks=all (a delivered message survives a broker loss), no message timeout (while Kafka is
// down messages wait; the in-flight cap stops reading the archive meanwhile).
// One request in flight per broker: a stream's order must survive a failed request whose
// successor succeeded, whatever the broker's sequence checking does. With librdkafka's
// default of five, the mock cluster under injected produce errors showed a frame missing
// from its place in the topic (the mirror stopped at the gap); with one, never.
const std::map<std::string, std::string> kProducerDefaults = {{"enable.idempotence", "true"},
                                                              {"acks", "all"},
                                                              {"linger.ms", "2"},
                                                              {"message.timeout.ms", "0"},
                                                              {"max.in.flight.requests.per.connection", "1"}};

}  // namespace

Headers PositionHeaders(const char* type, bool have, uint32_t epoch, uint64_t end) {
  Headers h = {{kHeaderType, type}};
  if (have) {
    h.emplace_back(kHeaderEpoch, absl::StrCat(epoch));
    h.emplace_back(kHeaderEnd, absl::StrCat(end));
  }
  return h;
}

absl::StatusOr<std::unique_ptr<Producer>> Producer::Create(const KafkaOptions& kafka, OnDelivered on_delivered) {
  std::unique_ptr<Producer> p(new Producer(std::move(on_delivered)));
  FERRY_ASSIGN_OR_RETURN(rd_kafka_conf_t * conf, NewConf(kafka, kProducerDefaults));
  rd_kafka_conf_set_dr_msg_cb(conf, &Producer::OnDelivery);
  rd_kafka_conf_set_opaque(conf, p.get());
  FERRY_ASSIGN_OR_RETURN(p->rk_, NewClient(RD_KAFKA_PRODUCER, conf));
  return p;
}

Producer::~Producer() {
  // Whatever was not delivered is dropped from the client (it is still in the archive;
  // the next session starts from Kafka's tail). Reports of purged messages free their
  // Delivery before the handle goes.
  rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (in_flight_messages_ > 0 && absl::Now() < deadline) rd_kafka_poll(rk_.get(), 10);
  // Reports still missing after that are never served: rd_kafka_destroy does not call
  // delivery callbacks, so their Delivery objects leak (a few bytes), nothing worse.
}

absl::Status Producer::Produce(const std::string& topic, int32_t partition, absl::string_view key,
                               absl::string_view value, const Headers& headers, const Delivery& what,
                               bool null_value) {
  while (true) {
    rd_kafka_headers_t* h = rd_kafka_headers_new(headers.size());
    for (const auto& [name, v] : headers) rd_kafka_header_add(h, name, -1, v.data(), static_cast<ssize_t>(v.size()));
    auto* d = new Delivery(what);
    d->bytes = value.size();
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        rk_.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key.empty() ? nullptr : key.data(), key.size()),
        RD_KAFKA_V_VALUE(null_value ? nullptr : const_cast<char*>(value.data()), null_value ? 0 : value.size()),
        RD_KAFKA_V_HEADERS(h),
        RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      in_flight_ += value.size();
      ++in_flight_messages_;
      return absl::OkStatus();
    }
    rd_kafka_headers_destroy(h);
    delete d;
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return KafkaError(absl::StrCat("kafka: produce to ", topic), err);
    rd_kafka_poll(rk_.get(), 50);
  }
}

absl::Status Producer::Poll(int ms) {
  rd_kafka_poll(rk_.get(), ms);
  if (char reason[512]; rd_kafka_fatal_error(rk_.get(), reason, sizeof(reason)) != RD_KAFKA_RESP_ERR_NO_ERROR &&
                        error_.ok()) {
    // The idempotent producer lost its sequence (librdkafka's fatal errors): this producer is
    // done; the next session starts again from Kafka's tail.
    error_ = absl::AbortedError(absl::StrCat("kafka producer: fatal error: ", reason));
  }
  return error_;
}

absl::Status Producer::Drain(absl::Duration timeout, const std::function<bool()>& cancelled) {
  const absl::Time deadline = absl::Now() + timeout;
  while (in_flight_messages_ > 0) {
    FERRY_RETURN_IF_ERROR(Poll(20));
    if (cancelled && cancelled()) return absl::CancelledError("stopping");
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("kafka: ", in_flight_messages_, " messages not delivered in ",
                                                      absl::FormatDuration(timeout)));
    }
  }
  return error_;
}

void Producer::OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto* self = static_cast<Producer*>(opaque);
  std::unique_ptr<Delivery> d(static_cast<Delivery*>(m->_private));
  self->in_flight_ -= d->bytes;
  --self->in_flight_messages_;
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (self->error_.ok()) self->error_ = KafkaError(absl::StrCat("kafka: delivery to ", Where(m)), m->err);
    return;
  }
  if (self->error_.ok() && self->on_delivered_) self->on_delivered_(*d);
}

}  // namespace ferry::cross_region
