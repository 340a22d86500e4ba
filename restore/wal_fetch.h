// wal-fetch: materialises the WAL file PostgreSQL's restore_command asks for from the frames
// in the archive (WAL is stored as frames, not as 16 MB files: docs/design.md).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/archive.h"

namespace ferry::restore {

// restore_command's exit statuses. PostgreSQL reads 1 to 125 as "no such file in the archive"
// and, at the end of a recovery without a target, promotes with whatever it replayed; a
// status above 125 is FATAL to recovery (RestoreArchivedFile: wait_result_is_any_signal).
// So only NotInArchive may exit 1: anything else that fails must stop recovery, loudly.
inline constexpr int kWalFetchNotInArchive = 1;
inline constexpr int kWalFetchFatal = 200;

// The status for "the archive does not have this file". A kNotFound from anywhere else (a
// segment file that vanished, a destination directory that does not exist) is not it.
absl::Status NotInArchive(absl::string_view message);
bool IsNotInArchive(const absl::Status& status);

// Writes WAL file `name` (a segment "TTTTTTTTXXXXXXXXYYYYYYYY" or a "TTTTTTTT.history") of
// `source` to `dest` atomically. A segment's bytes come from the timeline that owns each
// position per the timeline's history. The archive's last, incomplete segment is served
// zero-padded to full size: recovery reads up to the last archived record and stops there,
// which is what makes a restore reach the last synced commit (RPO 0).
// NotInArchive (IsNotInArchive): `name` is past the end of the archive's stream, or of a
// timeline it does not have; the only answer that lets recovery end quietly. Every other
// error (kDataLoss for a hole or a damaged frame, I/O, a bad destination, an unknown source)
// means the archive should have the file and cannot serve it: recovery must stop.
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

}  // namespace ferry::restore
