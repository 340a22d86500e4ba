// SnapshotWriter: writes one snapshot into a SnapshotStore (snapshot_store.h, which callers
// include): files cut into chunks, new chunks appended to packs, the manifest committed last.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pipeline/sink.h"
#include "storage/chunker.h"
#include "storage/manifest.h"
#include "storage/pack_file.h"

namespace ferry::storage {

// Counters of one snapshot being written.
struct SnapshotWriteStats {
  uint64_t raw_bytes = 0;       // file bytes handed in
  uint64_t chunks = 0;
  uint64_t new_chunks = 0;      // chunks not already in the store
  uint64_t new_stored_bytes = 0;  // bytes appended to packs (headers included)
};

class SnapshotStore;

// Writes one snapshot. Files are added one at a time, in order. Nothing is visible to
// readers until Commit, which syncs the packs and then renames the manifest into place; a
// writer destroyed without Commit (or a crash) leaves only unreferenced chunks in packs,
// which retention removes. Not thread-safe.
class SnapshotWriter final : public pipeline::SnapshotSink {
 public:
  ~SnapshotWriter() override;
  absl::Status AddDir(absl::string_view path, uint32_t mode, int64_t mtime) override;
  absl::Status BeginFile(absl::string_view path, uint32_t mode, int64_t mtime) override;
  absl::Status Write(absl::string_view bytes) override;
  absl::Status EndFile() override;
  // Metadata keys set here are added to (or override) those given to Begin.
  void SetMeta(const std::string& key, const std::string& value) { manifest_.meta[key] = value; }
  absl::StatusOr<SnapshotManifest> Commit();
  const SnapshotWriteStats& stats() const { return stats_; }
  bool empty() const { return manifest_.entries.empty(); }  // no directory or file added yet

  // Importing a snapshot another archive made (the standby mirror): its chunks arrive one by
  // one, then its manifest. ImportChunk stores a chunk unless the store has it (the id is the
  // SHA-256 of `raw`); HasChunk says whether the store or this writer holds one; SyncPacks
  // makes the chunks written so far durable; CommitImported commits `manifest` as it is (id,
  // meta, entries) with its chunk references resolved in this store, kNotFound naming a chunk
  // it lacks. The writer is done after a successful CommitImported, as after Commit.
  absl::Status ImportChunk(absl::string_view raw);
  bool HasChunk(const ChunkId& id) const;
  absl::Status SyncPacks();
  absl::StatusOr<SnapshotManifest> CommitImported(SnapshotManifest manifest);
  // Makes the chunks that packs hold but no committed snapshot names (synced by an import
  // that did not get to commit its manifest before a crash) referable by this writer, so an
  // importer need not receive them again. A pack is read up to its first damaged chunk.
  absl::Status AdoptUnreferencedChunks();
  // After a commit: the chunks this writer stored that no committed snapshot names (an
  // importer received a later snapshot's chunks before this one's manifest), which the next
  // writer Adopts (the commit synced them) so that they are not lost until a restart.
  std::vector<ChunkRef> Leftovers() const;
  void Adopt(const std::vector<ChunkRef>& chunks);

 private:
  friend class SnapshotStore;
  SnapshotWriter(SnapshotStore* store, int lock_fd, uint32_t first_pack);
  absl::Status PutChunk(absl::string_view raw, ChunkRef* ref);
  // The stored chunk `id` this writer may refer to instead of writing it, or null.
  const ChunkRef* Reusable(const ChunkId& id) const;
  // Whether a stored chunk (its header) is as this writer would write it: sealed under the
  // current key when the store has keys, anything when it has none.
  bool SealedAsNew(const char* header) const;
  // Syncs the pack being written (when there is one) and closes it.
  absl::Status ClosePack();

  SnapshotStore* store_;
  int lock_fd_;
  SnapshotManifest manifest_;
  SnapshotWriteStats stats_;
  Chunker chunker_;
  bool in_file_ = false;
  absl::flat_hash_map<ChunkId, ChunkRef, ChunkIdHash> written_;  // new chunks of this snapshot
  std::vector<uint32_t> packs_written_;
  uint32_t pack_ = 0;
  std::unique_ptr<PackAppender> pack_file_;  // the pack being written, or null
  ChunkBuffers buffers_;
  mutable PackFds pack_fds_;  // Reusable's reads of older packs
};

}  // namespace ferry::storage
