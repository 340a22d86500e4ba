// SnapshotStore: a source's snapshots (PostgreSQL base backups, Redis RDB images), each a
// manifest of files over content-addressed chunks kept in pack files. A chunk already in the
// store is never written again, so every snapshot restores as a full one and costs space
// only for what changed. Layout and byte formats: docs/archive-format.md ("Snapshots").
// The manifest is in manifest.h, the pack file in pack_file.h and the writer in
// snapshot_writer.h; this header, which includes them, is the one callers use.
#pragma once

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
#include "storage/archive_keys.h"
#include "storage/durable_file.h"
#include "storage/manifest.h"
#include "storage/snapshot_writer.h"

namespace ferry::storage {

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

}  // namespace ferry::storage
