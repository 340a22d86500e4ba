// Recovery of a PostgreSQL data directory through `ferry wal-fetch`, as `ferry sandbox`,
// drills and the integration tests run it on a local server.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "local/local_postgres.h"

namespace ferry::restore {

// Copies `backup` to `target`, sets restore_command to `ferry_binary wal-fetch` on `archive`
// and `source` (recovering to the end of the archive, then promoting), starts it and waits
// until recovery has finished (at most timeout_seconds).
absl::StatusOr<std::unique_ptr<local::LocalPostgres>> RecoverFromArchive(
    const std::string& backup, const std::string& target, const std::string& ferry_binary,
    const std::string& archive, const std::string& source, int timeout_seconds);

// Waits until a server started on a restored data directory has left recovery (promoted).
// A server that exits meanwhile (recovery failed) is reported with its log.
absl::Status WaitForRecoveryEnd(local::LocalPostgres& pg, int timeout_seconds);

}  // namespace ferry::restore
