// The archive's record of where a Redis stream can PSYNC from: a side file of the stream's
// log that the Redis source rewrites at every full resync and replication id change, and that
// backups, marks, the service and the Redis standby read.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::client::redis {

// Where the archive's copy of the stream ends, to PSYNC from.
struct RedisResume {
  bool empty = true;    // no replication id to continue from: PSYNC ? -1
  uint32_t epoch = 0;   // the archive epoch the stream ends in (a full resync starts epoch + 1)
  uint64_t offset = 0;  // replication offset it ends at
  std::string replid;   // replication id that offset belongs to
};

// The side file ("replication") that records the replication id of the current epoch:
// "<epoch> <offset> <replid>\n", rewritten at every full resync and id change.
inline constexpr char kReplicationFile[] = "replication";
std::string FormatReplicationFile(uint32_t epoch, uint64_t offset, const std::string& replid);
// kDataLoss when the text is not such a line.
absl::StatusOr<RedisResume> ParseReplicationFile(absl::string_view text);

}  // namespace ferry::client::redis
