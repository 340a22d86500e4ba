// The PostgreSQL majors ferry runs: checked once per connection before anything else
// (no slot is created on a server it cannot read).
#pragma once

#include "absl/status/statusor.h"

namespace ferry::client::pg {

inline constexpr int kOldestMajor = 14;
inline constexpr int kNewestMajor = 18;

// The major of a server_version_num (libpq's PQserverVersion: 150004 is 15.4); kFailedPrecondition
// naming the version found and the range supported when it is outside kOldestMajor..kNewestMajor.
absl::StatusOr<int> SupportedMajor(int server_version_num);

}  // namespace ferry::client::pg
