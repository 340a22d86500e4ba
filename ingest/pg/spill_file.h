// SpillFile: an anonymous temporary file of length-prefixed blobs, appended and then read back
// in order. The logical source keeps a streamed transaction here while it is in progress, so
// memory is bounded by max_record_bytes whatever the transaction's size (the file is gone when
// the object is, or the process).
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
