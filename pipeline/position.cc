#include "pipeline/position.h"

#include <cinttypes>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ferry::pipeline {

std::string Lsn::ToString() const {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%X/%08X", static_cast<uint32_t>(value_ >> 32),
                static_cast<uint32_t>(value_));
  return buf;
}

absl::StatusOr<Lsn> Lsn::Parse(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  uint32_t hi = 0;
  uint32_t lo = 0;
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty() || parts[0].size() > 8 ||
      parts[1].size() > 8 || !absl::SimpleHexAtoi(parts[0], &hi) ||
      !absl::SimpleHexAtoi(parts[1], &lo)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad LSN \"", text, "\": expected hex X/X such as 0/16B3748"));
  }
  return Lsn((static_cast<uint64_t>(hi) << 32) | lo);
}

UnixMicros NowUnixMicros() { return absl::ToUnixMicros(absl::Now()); }

std::string FormatUnixMicros(UnixMicros t) {
  if (t == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromUnixMicros(t), absl::UTCTimeZone());
}

absl::StatusOr<UnixMicros> ParseRfc3339(absl::string_view text) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(text), &t, &err)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad time \"", text, "\": expected RFC 3339 such as 2026-11-24T10:00:00Z (", err, ")"));
  }
  return absl::ToUnixMicros(t);
}

}  // namespace ferry::pipeline
