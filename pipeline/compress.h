// zstd for frames and snapshot chunks; zstd lives in pipeline/ (each C library is wrapped in
// one module: docs/design.md). Each thread keeps one compression and one decompression
// context: creating them per call (ZSTD_compress / ZSTD_decompress) costs more than a small
// frame itself.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ferry::pipeline {

// Appends the zstd frame of `raw` at `level` to *out.
absl::Status AppendZstd(absl::string_view raw, int level, std::string* out);

// Replaces *out with the zstd frame of `raw` at `level`.
absl::Status CompressZstd(absl::string_view raw, int level, std::string* out);

// Replaces *out with the decompression of `stored`, which must be exactly raw_len bytes;
// kDataLoss naming `what` otherwise.
absl::Status DecompressZstd(absl::string_view stored, size_t raw_len, absl::string_view what,
                            std::string* out);

}  // namespace ferry::pipeline
