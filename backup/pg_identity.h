// The archive holds one PostgreSQL system per source: the first connection records its
// identity (system id, WAL segment size, major), every later one must match it, so another
// system's WAL is never mixed into the history.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "client/pg/replication_conn.h"
#include "storage/archive.h"

namespace ferry::backup {

// Records the identity of `sys` for `source` when the archive has none, else checks it:
// kFailedPrecondition naming both systems when they differ, and a major upgrade (the
// server's major differs from the archive's) as such, with what to do.
absl::Status ClaimPostgresIdentity(storage::Archive& archive, const std::string& source,
                                   const client::pg::SystemInfo& sys);

// The check alone, against an identity read from the archive.
absl::Status CheckPostgresIdentity(const storage::SourceIdentity& identity, const std::string& archive_path,
                                   const std::string& source, const client::pg::SystemInfo& sys);

}  // namespace ferry::backup
