// Steps shared by `ferry sandbox` and the integration tests: table checksums, base backups
// without WAL, and recovery of a backup through `ferry wal-fetch`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/sandbox/local_postgres.h"

namespace ferry::tools {

// "table=count:md5\n" for each table, rows ordered by their text form: equal output means
// equal contents.
absl::StatusOr<std::string> TableChecksums(const LocalPostgres& pg,
                                           const std::vector<std::string>& tables);

// pg_basebackup -X none into `dir`: the WAL to make it consistent must come from the archive.
absl::Status TakeBaseBackupWithoutWal(const LocalPostgres& pg, const std::string& dir);

// Copies `backup` to `target`, sets restore_command to `ferry_binary wal-fetch` on `archive`
// and `source` (recovering to the end of the archive, then promoting), starts it and waits
// until recovery has finished (at most timeout_seconds).
absl::StatusOr<std::unique_ptr<LocalPostgres>> RecoverFromArchive(
    const std::string& backup, const std::string& target, const std::string& ferry_binary,
    const std::string& archive, const std::string& source, int timeout_seconds);

// Waits until a server started on a restored data directory has left recovery (promoted).
// A server that exits meanwhile (recovery failed) is reported with its log.
absl::Status WaitForRecoveryEnd(LocalPostgres& pg, int timeout_seconds);

// The path of the running executable (for restore_command).
std::string SelfExecutable();

}  // namespace ferry::tools
