// Pieces shared by the two DurableFile implementations; not part of the storage API.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/durable_file.h"

namespace ferry::storage {

absl::StatusOr<int> OpenForWrite(const std::string& path, bool create);
std::unique_ptr<DurableFile> NewPosixFile(int fd, const std::string& path);
// Takes ownership of fd (closes it on failure too).
absl::StatusOr<std::unique_ptr<DurableFile>> NewUringFile(int fd, const std::string& path);
// pwrite until every byte is written (a short write continues at the exact offset), through
// the fault injector.
absl::Status PwriteAll(int fd, const std::string& path, uint64_t offset, absl::string_view data);
// PwriteAll for a write an fdatasync follows: piece by piece (kWritebackPiece), starting each
// piece's write-back (sync_file_range) once it is in the page cache.
inline constexpr size_t kWritebackPiece = 1 << 20;
absl::Status PwriteStartingWriteback(int fd, const std::string& path, uint64_t offset, absl::string_view data);
// ftruncate, through the fault injector.
absl::Status TruncateFile(int fd, const std::string& path, uint64_t size);
[[noreturn]] void AbortOnSyncFailure(const std::string& path, int err);

}  // namespace ferry::storage
