// SpillFile: an anonymous temporary file, appended to and read back: raw bytes by offset, or
// length-prefixed blobs in order. The logical source keeps a streamed transaction here while it
// is in progress, and an incremental backup a large INCREMENTAL file while it is rebuilt, so
// that memory is bounded whatever their size (the file is gone when the object is, or the
// process).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::ingest::pg {

class SpillFile {
 public:
  // In `dir` (empty: $TMPDIR, else /tmp), unlinked from the start.
  static absl::StatusOr<std::unique_ptr<SpillFile>> Create(const std::string& dir = "");
  ~SpillFile();
  SpillFile(const SpillFile&) = delete;
  SpillFile& operator=(const SpillFile&) = delete;

  // Raw bytes at the end, and `n` bytes from `offset` into *out (kDataLoss past the end).
  absl::Status AppendRaw(absl::string_view bytes);
  absl::Status ReadAt(uint64_t offset, size_t n, std::string* out) const;

  // A blob (its length, then its bytes) at the end; ForEach reads the blobs back. A file holds
  // blobs or raw bytes, not both.
  absl::Status Append(absl::string_view blob);
  // Calls fn with each blob, in the order appended; the first error stops it.
  absl::Status ForEach(const std::function<absl::Status(absl::string_view)>& fn) const;
  uint64_t bytes() const { return size_; }
  uint64_t blobs() const { return blobs_; }

 private:
  SpillFile(int fd, std::string where) : fd_(fd), where_(std::move(where)) {}
  int fd_;
  std::string where_;  // for messages
  uint64_t size_ = 0;
  uint64_t blobs_ = 0;
};

}  // namespace ferry::ingest::pg
