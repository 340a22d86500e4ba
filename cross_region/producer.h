// The Kafka producer the stream and snapshot shippers share: ferry's producer settings, delivery
// reports served on the caller's thread, and the bytes in flight. Private to cross_region/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cross_region/kafka_internal.h"

namespace ferry::cross_region {

// What one produced message stands for, handed back in its delivery report.
struct Delivery {
  size_t bytes = 0;
  bool frame_end = false;  // the last part of a frame
  uint32_t epoch = 0;
  uint64_t end = 0;
  int64_t arrival_us = 0;
  uint64_t change_frame = 0;  // pg-changes: a Debezium event of this frame (its sequence + 1)
};

using Headers = std::vector<std::pair<const char*, std::string>>;

// The type header, and the position headers when `have` (a frame was shipped before).
Headers PositionHeaders(const char* type, bool have, uint32_t epoch, uint64_t end);

// A producer whose delivery reports are served on the caller's thread (by Poll), with the
// bytes in flight and the first delivery error. Not thread-safe.
class Producer {
 public:
  using OnDelivered = std::function<void(const Delivery&)>;

  static absl::StatusOr<std::unique_ptr<Producer>> Create(const KafkaOptions& kafka, OnDelivered on_delivered);
  ~Producer();

  // partition -1: by the key's hash.
  // `null_value`: a message without a value (a tombstone), not an empty one.
  absl::Status Produce(const std::string& topic, int32_t partition, absl::string_view key, absl::string_view value,
                       const Headers& headers, const Delivery& what, bool null_value = false);

  // Serves delivery reports, waiting up to `ms`; returns the first delivery error.
  absl::Status Poll(int ms);

  // Waits until nothing is in flight, polling; kDeadlineExceeded after `timeout`.
  absl::Status Drain(absl::Duration timeout, const std::function<bool()>& cancelled);

  size_t in_flight_bytes() const { return in_flight_; }
  size_t in_flight_messages() const { return in_flight_messages_; }

 private:
  explicit Producer(OnDelivered on_delivered) : on_delivered_(std::move(on_delivered)) {}

  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque);

  OnDelivered on_delivered_;
  KafkaHandle rk_;
  size_t in_flight_ = 0;
  size_t in_flight_messages_ = 0;
  absl::Status error_;
};

}  // namespace ferry::cross_region
