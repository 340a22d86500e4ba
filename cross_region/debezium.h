// Change events as Debezium's PostgreSQL connector writes them with the JSON converter
// (schemas off): one message per row change to <prefix>.<source>.<schema>.<table>, keyed by
// the primary key, so Kafka Connect sinks and other Debezium consumers read ferry's topics
// as they are. Values are typed as Debezium types them with decimal.handling.mode=string (its
// default is "precise", bytes that JSON readers cannot use) and the default
// time.precision.mode=adaptive; docs/change-events.md ("Types") lists the mapping.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "pipeline/change_event.h"

namespace ferry::cross_region {

struct DebeziumOptions {
  std::string topic_prefix;
  std::string source;
  bool tombstones = true;  // a null-valued message with the key after each delete
};

struct KafkaRecord {
  std::string topic;
  std::string key;    // JSON; empty: a null key (a table without a primary key)
  bool tombstone = false;
  std::string value;  // JSON; unused for a tombstone
};

// Debezium's placeholder for an unchanged TOAST value (the row's value was not sent).
inline constexpr char kUnavailableValue[] = "__debezium_unavailable_value";

// Appends the messages for `batch`'s row events in order. `now_ms`: the envelope's ts_ms.
// An UPDATE that changes the primary key becomes a delete (and tombstone) of the old key and
// a create of the new one, as Debezium does. Transactional logical messages are not
// published (they stay in the archive).
void RenderDebezium(const pipeline::ChangeBatch& batch, const DebeziumOptions& options, int64_t now_ms,
                    std::vector<KafkaRecord>* out);

// The topic of a table's events.
std::string TableTopic(const DebeziumOptions& options, const std::string& schema, const std::string& table);

}  // namespace ferry::cross_region
