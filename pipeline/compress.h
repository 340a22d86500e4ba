// zstd, for what is compressed outside frames (snapshot chunks). zstd lives in pipeline/
// (STYLE.md: each C library in one module); frames use the same library in frame.cc.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ferry::pipeline {

// Replaces *out with the zstd frame of `raw` at `level`.
absl::Status CompressZstd(absl::string_view raw, int level, std::string* out);

// Replaces *out with the decompression of `stored`, which must be exactly raw_len bytes;
// kDataLoss naming `what` otherwise.
absl::Status DecompressZstd(absl::string_view stored, size_t raw_len, absl::string_view what,
                            std::string* out);

}  // namespace ferry::pipeline
