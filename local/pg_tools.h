// Checks and copies made with PostgreSQL's own tools on a LocalPostgres: table checksums that
// compare contents, and base backups taken without WAL (the WAL must come from the archive).
// Used by `ferry sandbox`, drills and the integration tests.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "local/local_postgres.h"

namespace ferry::local {

// "table=count:md5\n" for each table, rows ordered by their text form: equal output means
// equal contents.
absl::StatusOr<std::string> TableChecksums(const LocalPostgres& pg,
                                           const std::vector<std::string>& tables);

// pg_basebackup -X none into `dir`: the WAL to make it consistent must come from the archive.
absl::Status TakeBaseBackupWithoutWal(const LocalPostgres& pg, const std::string& dir);

}  // namespace ferry::local
