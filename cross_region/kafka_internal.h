// librdkafka plumbing shared by the shipper and the mirror: RAII handles, configuration,
// message headers, and reads of a partition's tail. Private to cross_region/.
#pragma once

#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cross_region/kafka.h"

namespace ferry::cross_region {

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using KafkaHandle = std::unique_ptr<rd_kafka_t, KafkaDeleter>;

struct MessageDeleter {
  void operator()(rd_kafka_message_t* m) const { rd_kafka_message_destroy(m); }
};
using Message = std::unique_ptr<rd_kafka_message_t, MessageDeleter>;

struct PartitionListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
};
using PartitionList = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionListDeleter>;

// Sets one property; kInvalidArgument naming it on a bad key or value.
absl::Status SetProperty(rd_kafka_conf_t* conf, const std::string& key, const std::string& value);

// A configuration with the bootstrap servers and the user's [kafka.properties]; `defaults`
// are set first, so the user's properties override them.
absl::StatusOr<rd_kafka_conf_t*> NewConf(const KafkaOptions& options,
                                         const std::map<std::string, std::string>& defaults);
// Creates the client; takes `conf` in every case.
absl::StatusOr<KafkaHandle> NewClient(rd_kafka_type_t type, rd_kafka_conf_t* conf);

// Message headers: ferry's metadata on every message (positions, part numbers, checksums).
// Names and meanings: docs/archive-format.md ("Kafka messages").
inline constexpr char kHeaderType[] = "ferry-type";  // "frame", "file", "identity"
inline constexpr char kHeaderEpoch[] = "ferry-epoch";
inline constexpr char kHeaderStart[] = "ferry-start";
inline constexpr char kHeaderEnd[] = "ferry-end";
inline constexpr char kHeaderPart[] = "ferry-part";  // "i/n"
inline constexpr char kHeaderChecksum[] = "ferry-checksum";
inline constexpr char kHeaderName[] = "ferry-name";
inline constexpr char kHeaderRawLen[] = "ferry-raw-len";
// On a chunk from an encrypted archive: the key its (compressed) bytes are sealed under, with
// the chunk id's hex as additional data, so Kafka holds no snapshot in the clear.
inline constexpr char kHeaderKeyId[] = "ferry-key-id";

// The value of header `name`, or nullopt.
std::optional<std::string> HeaderValue(const rd_kafka_message_t* m, const char* name);
// The header as an unsigned decimal; kDataLoss naming the topic and offset when absent or bad.
absl::StatusOr<uint64_t> HeaderNumber(const rd_kafka_message_t* m, const char* name);

// "topic[partition]@offset", for messages about a message.
std::string Where(const rd_kafka_message_t* m);

// The status for a librdkafka error code, with context: kUnavailable for a cluster not
// reachable or not ready (worth retrying), kPermissionDenied for authentication and
// authorization, kAborted for a producer's fatal error, kFailedPrecondition for the rest.
absl::Status KafkaError(absl::string_view what, rd_kafka_resp_err_t err);

// Reads partition `partition` of `topic` from offset `from` (kLastMessage: only the last
// message) up to the high watermark as of the call, handing each message to `fn` (stops early
// when fn returns false). The consumer is a throwaway without a group. kUnavailable when the
// cluster cannot be reached in `timeout_ms`; kCancelled as soon as `cancelled` says so.
inline constexpr int64_t kLastMessage = -1;
absl::Status ReadPartition(const KafkaOptions& options, const std::string& topic, int32_t partition,
                           int64_t from, int timeout_ms,
                           const std::function<bool(const rd_kafka_message_t*)>& fn,
                           const std::function<bool()>& cancelled = nullptr);
// The low and high watermarks of a partition (an unknown topic is created empty, 0/0).
absl::StatusOr<std::pair<int64_t, int64_t>> Watermarks(const KafkaOptions& options, const std::string& topic,
                                                       int32_t partition, int timeout_ms);

}  // namespace ferry::cross_region
