#include "storage/chunker.h"

#include <array>

namespace ferry::storage {
namespace {

// 256 pseudo-random 64-bit values (splitmix64 from a fixed seed). Changing the table changes
// every chunk id, so it is part of the archive format: never edit it.
constexpr std::array<uint64_t, 256> MakeGearTable() {
  std::array<uint64_t, 256> t{};
  uint64_t x = 0x66657272792d6364ULL;  // "ferry-cd"
  for (auto& v : t) {
    x += 0x9E3779B97F4A7C15ULL;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    v = z ^ (z >> 31);
  }
  return t;
}
constexpr std::array<uint64_t, 256> kGear = MakeGearTable();

// A mask with `bits` one-bits spread over the high half of the word (the gear hash's best
// mixed bits), as FastCDC does.
uint64_t SpreadMask(int bits) {
  uint64_t mask = 0;
  for (int i = 0; i < bits; ++i) mask |= uint64_t{1} << (63 - 2 * i);
  return mask;
}

int Log2(size_t v) {
  int n = 0;
  while ((size_t{1} << (n + 1)) <= v) ++n;
  return n;
}

// The scan for a cut point, resumable: it goes on from (*i, *h) over data (the chunk from
// its first byte) and returns the chunk's length once it finds one, else 0 with (*i, *h)
// where it stopped. The hash starts at min_bytes (no cut before it).
size_t ScanForBoundary(absl::string_view data, const ChunkerOptions& options, size_t* i, uint64_t* h) {
  const size_t n = data.size();
  if (n <= options.min_bytes) return 0;
  // Normalised chunking: a stricter mask before the average size and a looser one after, so
  // chunk sizes cluster around the average.
  const int bits = Log2(options.avg_bytes);
  const uint64_t strict = SpreadMask(bits + 1);
  const uint64_t loose = SpreadMask(bits - 1);
  const size_t limit = n < options.max_bytes ? n : options.max_bytes;
  const size_t normal = options.avg_bytes < limit ? options.avg_bytes : limit;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  for (; *i < normal; ++*i) {
    *h = (*h << 1) + kGear[p[*i]];
    if ((*h & strict) == 0) return ++*i;
  }
  for (; *i < limit; ++*i) {
    *h = (*h << 1) + kGear[p[*i]];
    if ((*h & loose) == 0) return ++*i;
  }
  return limit == options.max_bytes ? limit : 0;
}

}  // namespace

size_t FindChunkBoundary(absl::string_view data, const ChunkerOptions& options) {
  size_t i = options.min_bytes;
  uint64_t h = 0;
  const size_t len = ScanForBoundary(data, options, &i, &h);
  return len == 0 ? data.size() : len;
}

bool Chunker::Next(bool at_end, absl::string_view* chunk) {
  if (consumed_ > 0) {
    pending_.erase(0, consumed_);
    consumed_ = 0;
    scan_at_ = options_.min_bytes;  // a new chunk: its scan starts over
    scan_hash_ = 0;
  }
  if (pending_.empty()) return false;
  // Goes on where the last call stopped: small writes cost no rescan of what is pending.
  size_t len = ScanForBoundary(pending_, options_, &scan_at_, &scan_hash_);
  if (len == 0) {
    // Without a cut point short of max_bytes the chunk may still grow: wait for more bytes.
    if (!at_end) return false;
    len = pending_.size();
  }
  *chunk = absl::string_view(pending_.data(), len);
  consumed_ = len;
  return true;
}

}  // namespace ferry::storage
