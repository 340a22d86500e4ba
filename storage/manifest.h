// A snapshot's manifest: what a snapshot is (id, metadata, files and directories) and where
// each file's chunks are stored, with its text form (docs/archive-format.md "Snapshot
// manifest"). The store that keeps manifests and packs: snapshot_store.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pipeline/sha256.h"

namespace ferry::storage {

using ChunkId = pipeline::Sha256Digest;  // SHA-256 of the chunk's raw bytes

struct ChunkIdHash {
  size_t operator()(const ChunkId& id) const;  // the first 8 bytes: already uniform
};

// Where a chunk is stored.
struct ChunkRef {
  ChunkId id{};
  uint32_t pack = 0;
  uint64_t offset = 0;  // of the chunk's header in the pack
  uint32_t stored_len = 0;
  uint32_t raw_len = 0;
};

struct SnapshotEntry {
  enum class Type { kFile, kDir };
  Type type = Type::kFile;
  std::string path;  // relative, '/'-separated
  uint32_t mode = 0;
  int64_t mtime = 0;  // seconds since the Unix epoch
  uint64_t size = 0;
  std::vector<ChunkRef> chunks;  // in file order; their raw lengths sum to size
};

// What a snapshot is: its id (sortable: the UTC start time, "20261124T100000Z"), its
// metadata (kind, class, positions, times; free-form keys so each source kind adds its own)
// and its files.
struct SnapshotManifest {
  std::string id;
  std::map<std::string, std::string> meta;
  std::vector<SnapshotEntry> entries;

  // meta[key], or "" when absent.
  std::string Get(const std::string& key) const;
  uint64_t StoredBytes() const;  // sum of stored chunk lengths (shared chunks counted each time)
  uint64_t RawBytes() const;
};

// Manifest text <-> struct (docs/archive-format.md "Snapshot manifest"). Parse is strict:
// kDataLoss naming `what` and the line on anything malformed, a wrong checksum included.
std::string SerializeSnapshotManifest(const SnapshotManifest& manifest);
absl::StatusOr<SnapshotManifest> ParseSnapshotManifest(absl::string_view text,
                                                       absl::string_view what);

std::string ChunkIdHex(const ChunkId& id);

// A committed manifest's file name in the store's directory: <id> and this suffix.
inline constexpr char kManifestSuffix[] = ".snap";

}  // namespace ferry::storage
