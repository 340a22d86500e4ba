// Strong position types for every stream ferry carries. Positions are never bare integers
// outside this file: an Lsn cannot be passed where a RedisOffset is expected.
#pragma once

#include <compare>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::pipeline {

// A byte position in PostgreSQL's WAL. Prints as PostgreSQL does: "%X/%08X".
class Lsn {
 public:
  constexpr Lsn() = default;
  constexpr explicit Lsn(uint64_t value) : value_(value) {}
  constexpr uint64_t value() const { return value_; }
  constexpr bool valid() const { return value_ != 0; }
  auto operator<=>(const Lsn&) const = default;

  std::string ToString() const;
  // Parses "X/Y" (hex, as PostgreSQL prints it). kInvalidArgument names the text.
  static absl::StatusOr<Lsn> Parse(absl::string_view text);

 private:
  uint64_t value_ = 0;
};

// A PostgreSQL timeline. Timeline 0 does not exist; 1 is the first.
class TimelineId {
 public:
  constexpr TimelineId() = default;
  constexpr explicit TimelineId(uint32_t value) : value_(value) {}
  constexpr uint32_t value() const { return value_; }
  auto operator<=>(const TimelineId&) const = default;

 private:
  uint32_t value_ = 0;
};

// A Redis replication offset (bytes of command stream since the replication id began).
class RedisOffset {
 public:
  constexpr RedisOffset() = default;
  constexpr explicit RedisOffset(uint64_t value) : value_(value) {}
  constexpr uint64_t value() const { return value_; }
  auto operator<=>(const RedisOffset&) const = default;

 private:
  uint64_t value_ = 0;
};

// A place in one of the archive's streams, where sources and sinks meet: the epoch (a
// PostgreSQL timeline, a Redis sync epoch, 1 for change events) and the byte offset in it (an
// LSN, a replication offset, a change position). Offsets of different epochs are never
// compared: an epoch change may restart below the previous epoch's end.
struct StreamPosition {
  uint32_t epoch = 0;
  uint64_t offset = 0;
  bool operator==(const StreamPosition&) const = default;
};

// Microseconds since the Unix epoch. Used for both arrival times and data timestamps.
using UnixMicros = int64_t;

// PostgreSQL's TimestampTz epoch (2000-01-01) in Unix microseconds.
inline constexpr UnixMicros kPgEpochUnixMicros = 946684800LL * 1000000;

// A PostgreSQL TimestampTz (microseconds since 2000-01-01) in Unix microseconds. 'infinity'
// (INT64_MAX) and anything else that would overflow stay at INT64_MAX.
inline UnixMicros PgTimeToUnixMicros(int64_t pg_time) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  return pg_time > kMax - kPgEpochUnixMicros ? kMax : pg_time + kPgEpochUnixMicros;
}

UnixMicros NowUnixMicros();

// RFC 3339 in UTC with microseconds, e.g. "2026-11-24T10:00:00.123456Z"; "-" for 0.
std::string FormatUnixMicros(UnixMicros t);
// Parses RFC 3339 ("2026-11-24T10:00:00Z", fractional seconds and offsets allowed).
absl::StatusOr<UnixMicros> ParseRfc3339(absl::string_view text);

}  // namespace ferry::pipeline
