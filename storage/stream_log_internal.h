// File helpers shared by the two halves of StreamLog (stream_log.cc, stream_log_recovery.cc);
// not part of the storage API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ferry::storage {

// Reads [offset, offset+len) of `path` into *out (resized; its capacity is reused).
// `to_eof`: a file that ends before offset + len is not an error, *out holds what there is (the
// last segment, read from its size, may be cut to its last frame by the writer sealing it).
absl::Status ReadRangeInto(const std::string& path, uint64_t offset, size_t len, std::string* out,
                           bool to_eof = false);

absl::StatusOr<uint64_t> FileSize(const std::string& path);

}  // namespace ferry::storage
