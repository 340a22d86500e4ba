// wal-fetch: materialises the WAL file PostgreSQL's restore_command asks for from the frames
// in the archive (DESIGN.md "WAL is stored as frames, not as 16 MB files").
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/archive.h"

namespace ferry::tools {

// Writes WAL file `name` (a segment "TTTTTTTTXXXXXXXXYYYYYYYY" or a "TTTTTTTT.history") of
// `source` to `dest` atomically. A segment's bytes come from the timeline that owns each
// position per the timeline's history. The archive's last, incomplete segment is served
// zero-padded to full size: recovery reads up to the last archived record and stops there,
// which is what makes a restore reach the last synced commit (RPO 0).
// kNotFound: not in the archive (restore_command exits 1 and recovery moves on).
// kDataLoss: the archive has a hole inside the segment, or a damaged frame.
absl::Status FetchWalFile(storage::Archive& archive, const std::string& source,
                          const std::string& name, const std::string& dest);

struct WalFile {
  std::string bytes;
  // False for the archive's last segment, served zero-padded past its last archived byte:
  // its contents grow while the archive does, so it must never be cached.
  bool complete = false;
};

// FetchWalFile's contents without writing them anywhere.
absl::StatusOr<WalFile> MaterialiseWalFile(storage::Archive& archive, const std::string& source,
                                           const std::string& name);

// Writes `bytes` to a temp file beside `dest` and renames it over `dest`: readers never see
// a half-written file. Not synced: PostgreSQL syncs what it restores, and wal-fetch's spool
// is dropped after an OS crash (wal_prefetch.h).
absl::Status WriteReplacing(const std::string& dest, absl::string_view bytes);

// The source's WAL segment size from its identity; kDataLoss when it has none.
absl::StatusOr<uint64_t> WalSegmentBytes(const storage::Archive& archive, const std::string& source);

}  // namespace ferry::tools
