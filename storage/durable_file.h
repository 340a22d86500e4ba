// DurableFile: the one write primitive the archive needs — append bytes at an offset and
// return only once they are on disk (fdatasync) — with an io_uring and a POSIX implementation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::storage {

enum class WriterKind { kIoUring, kPosix };

absl::StatusOr<WriterKind> ParseWriterKind(absl::string_view name);  // "io_uring" | "posix"
absl::string_view WriterKindName(WriterKind kind);

// An open file that is written at explicit offsets (never O_APPEND, so a short write can be
// resumed at the exact offset). Not thread-safe; one writer.
//
// Durability rule (PostgreSQL's fsync lesson): if fdatasync fails the kernel may already have
// dropped the dirty pages, so a retry proves nothing. WriteDurably therefore logs and aborts
// the process on an fdatasync error; recovery on restart truncates the unsynced tail.
class DurableFile {
 public:
  virtual ~DurableFile() = default;

  // Writes all of `data` at `offset`, then fdatasync. OK means durable. A write error
  // (ENOSPC: kResourceExhausted; EIO and others: kDataLoss/kInternal) names the file; the
  // bytes at and after `offset` are then undefined and the caller must truncate them.
  virtual absl::Status WriteDurably(uint64_t offset, absl::string_view data) = 0;

  // Writes without syncing (index files, which are rebuilt from segments if lost).
  virtual absl::Status WriteAt(uint64_t offset, absl::string_view data) = 0;
  virtual absl::Status Sync() = 0;
  virtual absl::Status Truncate(uint64_t size) = 0;
  virtual const std::string& path() const = 0;
};

// Opens (creating with FileCreateMode() when asked) `path` for writing with the chosen writer. An
// io_uring that cannot be set up (seccomp, sysctl kernel.io_uring_disabled, old kernel) is
// reported as kFailedPrecondition saying to use writer = "posix".
absl::StatusOr<std::unique_ptr<DurableFile>> OpenDurableFile(const std::string& path,
                                                             WriterKind kind, bool create);

// Start-up check of a writer in `dir`: opens a scratch file with it, writes and syncs 4 KiB,
// removes it. kFailedPrecondition (naming the fix) when io_uring is blocked on this machine.
absl::Status ProbeWriter(WriterKind kind, const std::string& dir);

// The modes of the files and directories storage creates. Archive::Open sets them from the
// archive directory's own mode: private (files 0600, directories 0700), or group-readable
// (files 0640, directories 2750) when the operator gave that directory group access, for a
// restoring user in its group (the postgres user running `ferry wal-fetch`); applied exactly,
// whatever the umask, never readable by others. Before any archive is opened: 0644 and 0755,
// less the umask.
void SetArchiveGroupAccess(bool group);
unsigned FileCreateMode();
unsigned DirCreateMode();
// Creates directory `path` with DirCreateMode() (OK when it exists). Once an archive sets the
// modes they are applied exactly, whatever the process umask, as files get theirs at creation.
absl::Status CreateDirectory(const std::string& path);

// fsyncs a directory so that a created or renamed entry in it survives a crash.
absl::Status SyncDirectory(const std::string& dir);

// Writes `contents` to dir/name atomically and durably: temp file, fdatasync, rename, fsync dir.
absl::Status WriteFileAtomically(const std::string& dir, const std::string& name,
                                 absl::string_view contents);

// Reads a whole file. kNotFound when it does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// A secret (password, token, key) from a file only its owner may read or write: one that
// group or others can is refused (kPermissionDenied, saying to chmod 600), as ssh refuses
// such a key, so that a slip in its mode is noticed. `group_may_read` allows 0640, for a
// secret two users share through a group (the archive key: the service and postgres).
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, bool group_may_read = false);

// A status for a failed OS call on `path`: "<op> <path>: <strerror>", with the code chosen by
// errno (ENOSPC -> kResourceExhausted, ENOENT -> kNotFound, EACCES -> kPermissionDenied, ...;
// kUnknown for an errno not classified, and for 0).
absl::Status ErrnoStatus(absl::string_view op, absl::string_view path, int err);

}  // namespace ferry::storage
