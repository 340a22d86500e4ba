// One-off SQL on a normal (not replication) connection: for `ferry mark`'s restore point.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::ingest::pg {

// Connects with `conninfo`, runs `sql` with text parameters $1.., returns the first row's
// columns (empty when no row) and disconnects. kUnavailable when the server cannot be
// reached, kFailedPrecondition with the server's message when the statement fails.
absl::StatusOr<std::vector<std::string>> QueryFirstRow(const std::string& conninfo, const std::string& sql,
                                                       const std::vector<std::string>& params = {});

}  // namespace ferry::ingest::pg
