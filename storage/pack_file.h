// The pack file of a snapshot store: a 16-byte header, then chunks, each a 64-byte header and
// its stored bytes (zstd-compressed or raw, sealed when the store has keys). Writing one
// (EncodeChunk, PackAppender), reading and checking a chunk (PackFds, ReadChunk) and scanning
// a whole pack (ForEachIntactChunk). Byte formats: docs/archive-format.md ("Snapshots").
// Used by the store and its writer (snapshot_store.h); not meant for other callers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pipeline/cipher.h"
#include "storage/durable_file.h"
#include "storage/manifest.h"

namespace ferry::storage {

inline constexpr size_t kPackHeaderBytes = 16;
inline constexpr size_t kChunkHeaderBytes = 64;

// <store_dir>/packs/<number, 8 digits>.pack
std::string PackFilePath(const std::string& store_dir, uint32_t pack);

// Scratch buffers a reader or writer reuses from chunk to chunk.
struct ChunkBuffers {
  std::string compressed, sealed;   // EncodeChunk's
  std::string stored, opened, raw;  // ReadChunk's
};

// Encodes `raw` (`id`: its SHA-256) as a stored chunk: zstd unless that does not make it
// smaller, sealed under the current key of `keys` when given. Fills `header`
// (kChunkHeaderBytes); *body is the stored bytes (in `raw` or `buffers`).
absl::Status EncodeChunk(absl::string_view raw, const ChunkId& id, const pipeline::Keyring* keys,
                         ChunkBuffers* buffers, char* header, absl::string_view* body);

// Whether a chunk header is as a new chunk would be written: sealed under the current key of
// `keys` when there are keys, anything when `keys` is null.
bool SealedAsNew(const char* header, const pipeline::Keyring* keys);

// Read-only descriptors of a store's packs, each opened on first use and closed with this.
class PackFds {
 public:
  explicit PackFds(std::string store_dir) : dir_(std::move(store_dir)) {}
  ~PackFds();
  PackFds(const PackFds&) = delete;
  PackFds& operator=(const PackFds&) = delete;

  // The descriptor of `pack`, or -1 when it cannot be opened (errno says why on the first
  // try; a pack that failed is not tried again).
  int Get(uint32_t pack);

 private:
  const std::string dir_;
  std::map<uint32_t, int> fds_;
};

// Reads chunk `ref` from pack `path` (open as `fd`) and checks it: header, its match with
// `ref`, XXH3 of the stored bytes. With `data`, also opens a sealed chunk with `keys`,
// decompresses and checks the SHA-256 against the id, and points *data at the raw bytes (in
// `buffers`); without, stops after the checksums. kDataLoss naming pack, offset and `file`
// (the snapshot file the chunk belongs to); kFailedPrecondition for a sealed chunk whose key
// `keys` lacks.
absl::Status ReadChunk(int fd, const std::string& path, const ChunkRef& ref, absl::string_view file,
                       const pipeline::Keyring* keys, ChunkBuffers* buffers, absl::string_view* data);

// Reads the header of the chunk at `offset` (kChunkHeaderBytes into `header`); false when it
// cannot be read whole.
bool ReadChunkHeader(int fd, uint64_t offset, char* header);

// Calls `fn` for each chunk of pack number `pack` (`bytes`: the whole file), in order, up to
// the first one damaged or cut short; for none when the pack header is wrong.
void ForEachIntactChunk(absl::string_view bytes, uint32_t pack,
                        const std::function<void(const ChunkRef& ref, const char* header)>& fn);

// A pack being written: its header, then the chunks appended, through a buffer written to the
// file in large pieces. Durable only after Sync.
class PackAppender {
 public:
  // Creates pack `path` numbered `pack` (a leftover file is emptied) and buffers its header.
  static absl::StatusOr<std::unique_ptr<PackAppender>> Create(const std::string& path, uint32_t pack);

  // Appends a chunk: its header (kChunkHeaderBytes) and stored bytes. Writes the buffer to
  // the file once it holds enough.
  absl::Status Append(const char* header, absl::string_view body);
  // Writes the buffered bytes to the file.
  absl::Status Flush();
  // Flush, then sync the file.
  absl::Status Sync();
  uint64_t size() const { return size_; }  // bytes in the pack (flushed or buffered)

 private:
  explicit PackAppender(std::unique_ptr<DurableFile> file) : file_(std::move(file)) {}

  std::unique_ptr<DurableFile> file_;
  uint64_t size_ = 0;     // bytes in the pack file (flushed or buffered)
  uint64_t flushed_ = 0;  // bytes of the pack file already written
  std::string buffer_;    // bytes after the flushed part
};

}  // namespace ferry::storage
