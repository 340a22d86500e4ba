// What the Kafka side of ferry shares: the connection settings, the topic names, and the mock
// cluster (librdkafka's own, speaking the real protocol) that `brokers = "mock:N"` and
// `ferry kafka-mock` start. librdkafka types stay inside this module (kafka_internal.h).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pipeline/frame.h"

namespace ferry::cross_region {

struct KafkaOptions {
  std::string brokers;       // bootstrap servers, "host:port,host:port"
  std::string topic_prefix;  // topics are <prefix>.<source>.<stream>
  // Passed to librdkafka as they are (security.protocol, ssl.*, sasl.*, ...); [kafka.properties].
  std::map<std::string, std::string> properties;
  // A frame larger than this travels as several messages ("parts"); under the broker's
  // message.max.bytes (1 MB by default) with room for headers.
  size_t max_message_bytes = 900 * 1024;
};

// <prefix>.<source>.<stream>: one stream's frames, in partition 0 (one partition: one order).
std::string StreamTopic(absl::string_view prefix, absl::string_view source, pipeline::StreamKind kind);
// <prefix>.<source>.chunks: snapshot chunks keyed by their id (suitable for compaction).
std::string ChunkTopic(absl::string_view prefix, absl::string_view source);
// <prefix>.<source>.snapshots: snapshot manifests, in partition 0, each after its chunks.
std::string ManifestTopic(absl::string_view prefix, absl::string_view source);

// "mock:N" -> N (1..16); kNotFound when `brokers` is not a mock address; kInvalidArgument for
// a malformed one.
absl::StatusOr<int> ParseMockBrokers(absl::string_view brokers);

// librdkafka's in-process mock cluster. Thread-safe; lives until destroyed.
class MockCluster {
 public:
  static absl::StatusOr<std::unique_ptr<MockCluster>> Start(int brokers);
  ~MockCluster();
  MockCluster(const MockCluster&) = delete;
  MockCluster& operator=(const MockCluster&) = delete;

  // "127.0.0.1:port,127.0.0.1:port": give it to any Kafka client as bootstrap.servers.
  const std::string& bootstrap() const { return bootstrap_; }

  // Fault controls for tests. A broker (1..N) closes its connections and refuses new ones
  // (for good: librdkafka 2.0's mock cannot reliably listen again on the same port, so a
  // broker is not brought back; move its partitions' leadership away, as a failover does).
  absl::Status SetBrokerDown(int broker);
  // Makes `broker` the leader of the partition; -1 leaves it without one (Kafka "down" for
  // that partition: produce and fetch wait until a leader is set again).
  absl::Status SetLeader(const std::string& topic, int32_t partition, int broker);
  // The next `count` produce requests fail with a retriable error (the producer must retry
  // without losing order or duplicating).
  void FailNextProduceRequests(int count);

 private:
  struct Impl;
  explicit MockCluster(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string bootstrap_;
};

}  // namespace ferry::cross_region
