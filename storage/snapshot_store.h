// SnapshotStore: a source's snapshots (PostgreSQL base backups, Redis RDB images), each a
// manifest of files over content-addressed chunks kept in pack files. A chunk already in the
// store is never written again, so every snapshot restores as a full one and costs space
// only for what changed. Layout and byte formats: docs/archive-format.md ("Snapshots").
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pipeline/cipher.h"
#include "pipeline/sha256.h"
#include "pipeline/sink.h"
#include "storage/archive_keys.h"
#include "storage/chunker.h"
#include "storage/durable_file.h"

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
  absl::Status FlushPackBuffer();
  absl::Status OpenPack();

  SnapshotStore* store_;
  int lock_fd_;
  SnapshotManifest manifest_;
  SnapshotWriteStats stats_;
  Chunker chunker_;
  bool in_file_ = false;
  absl::flat_hash_map<ChunkId, ChunkRef, ChunkIdHash> written_;  // new chunks of this snapshot
  std::vector<uint32_t> packs_written_;
  uint32_t pack_ = 0;
  std::unique_ptr<DurableFile> pack_file_;
  uint64_t pack_size_ = 0;  // bytes in the pack file (flushed or buffered)
  uint64_t flushed_ = 0;    // bytes of the pack file already written
  std::string pack_buffer_;  // bytes after the flushed part
  std::string compressed_;
  std::string sealed_;
  mutable std::map<uint32_t, int> pack_fds_;  // Reusable's reads of older packs
};

// Not thread-safe. Several processes may use one store: writers take an exclusive lock on
// the store's LOCK file for their whole life (one backup at a time per source; the WAL
// streaming service does not hold it, so a backup never blocks streaming). Readers need no
// lock: manifests appear atomically and packs are only appended to.
class SnapshotStore {
 public:
  // Opens (writable: creates) the store in `dir` (<archive>/streams/<source>/snapshots).
  // Reads every manifest; a damaged manifest is kDataLoss naming it. New chunks are sealed
  // with `keys` (when given), and sealed chunks opened with them.
  static absl::StatusOr<std::unique_ptr<SnapshotStore>> Open(const std::string& dir, bool writable,
                                                             std::shared_ptr<const pipeline::Keyring> keys = ProcessKeys());

  // Committed snapshots, oldest first (by id).
  const std::vector<SnapshotManifest>& snapshots() const { return snapshots_; }
  const SnapshotManifest* Find(absl::string_view id) const;

  // Starts a snapshot whose id is the UTC second `start_unix_seconds` (made unique with a
  // suffix when taken). kFailedPrecondition when another writer holds the store.
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> Begin(int64_t start_unix_seconds,
                                                        std::map<std::string, std::string> meta);

  // Reads a file's bytes in order, checking each chunk (header, XXH3 of the stored bytes,
  // the seal of a sealed one, SHA-256 of the raw bytes against its id). kDataLoss naming
  // pack and offset; kFailedPrecondition for a sealed chunk whose key the store lacks.
  absl::Status ReadFile(const SnapshotEntry& entry,
                        const std::function<absl::Status(absl::string_view)>& sink) const;

  // ReadFile's checks as far as they go without opening sealed chunks: header, manifest
  // reference and XXH3 of the stored bytes (what `ferry verify` does without the key).
  absl::Status CheckStored(const SnapshotEntry& entry) const;

  // Removes a snapshot's manifest (its chunks stay until CollectGarbage). Takes the lock.
  absl::Status Remove(absl::string_view id);
  // Deletes packs that no committed snapshot references (whole packs only: a pack shared
  // with a kept snapshot stays). Returns the pack paths deleted (or that would be, on
  // dry_run). Takes the lock, so it never races a writer.
  absl::StatusOr<std::vector<std::string>> CollectGarbage(bool dry_run);

  uint64_t PackBytes() const;  // total size of the pack files
  const std::string& dir() const { return dir_; }
  std::string PackPath(uint32_t pack) const;

 private:
  friend class SnapshotWriter;
  SnapshotStore(std::string dir, std::shared_ptr<const pipeline::Keyring> keys)
      : dir_(std::move(dir)), keys_(std::move(keys)) {}
  absl::Status Load();
  // ReadFile with a sink, CheckStored without.
  absl::Status ReadChunks(const SnapshotEntry& entry, const std::function<absl::Status(absl::string_view)>* sink) const;
  absl::StatusOr<int> Lock() const;  // exclusive flock on LOCK, non-blocking
  std::vector<uint32_t> PackNumbers() const;
  void Committed(SnapshotManifest manifest);

  const std::string dir_;
  const std::shared_ptr<const pipeline::Keyring> keys_;
  std::vector<SnapshotManifest> snapshots_;
  absl::flat_hash_map<ChunkId, ChunkRef, ChunkIdHash> chunks_;  // of committed snapshots
};

// Manifest text <-> struct (docs/archive-format.md "Snapshot manifest"). Parse is strict:
// kDataLoss naming `what` and the line on anything malformed, a wrong checksum included.
std::string SerializeSnapshotManifest(const SnapshotManifest& manifest);
absl::StatusOr<SnapshotManifest> ParseSnapshotManifest(absl::string_view text,
                                                       absl::string_view what);

std::string ChunkIdHex(const ChunkId& id);

}  // namespace ferry::storage
