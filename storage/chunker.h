// Content-defined chunking (a gear rolling hash with FastCDC's normalised cut masks): chunk
// boundaries depend on the bytes around them, not on their offset, so an insert early in a
// file changes the chunks around it and leaves every later chunk, and its id, as it was.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace ferry::storage {

struct ChunkerOptions {
  size_t min_bytes = 64 << 10;
  size_t avg_bytes = 256 << 10;  // a power of two
  size_t max_bytes = 1 << 20;
};

// Finds the length of the first chunk of `data`: a cut point in [min, max], or data.size()
// when data is shorter than max and no cut point was found (more bytes may follow: the
// caller keeps them and calls again; at the end of a file what is left is the last chunk).
// Pure function of the bytes: the same input always cuts at the same places.
size_t FindChunkBoundary(absl::string_view data, const ChunkerOptions& options);

// Feeds a byte stream and hands out chunks. Not thread-safe.
class Chunker {
 public:
  explicit Chunker(ChunkerOptions options = {}) : options_(options) {}

  // Appends bytes; afterwards Next returns the chunks they complete.
  void Add(absl::string_view bytes) { pending_.append(bytes.data(), bytes.size()); }
  // The next complete chunk (valid until the next call), or false when more bytes are needed.
  // With at_end, whatever is left is the last chunk.
  bool Next(bool at_end, absl::string_view* chunk);

 private:
  ChunkerOptions options_;
  std::string pending_;
  size_t consumed_ = 0;  // bytes at the front of pending_ already handed out
  // Where the scan of the chunk at the front of pending_ stopped, and its hash there.
  size_t scan_at_ = options_.min_bytes;
  uint64_t scan_hash_ = 0;
};

}  // namespace ferry::storage
