// SnapshotWriter: cuts files into chunks, appends the chunks the store lacks to new packs,
// and commits the manifest once the packs are durable; also the import side the standby
// mirror uses (chunks first, manifest last).
#include "storage/snapshot_writer.h"

#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "pipeline/sha256.h"
#include "storage/durable_file.h"
#include "storage/snapshot_store.h"

namespace ferry::storage {
namespace {

constexpr uint64_t kPackTargetBytes = 256ull << 20;  // a new pack once a pack holds this much

}  // namespace

SnapshotWriter::SnapshotWriter(SnapshotStore* store, int lock_fd, uint32_t first_pack)
    : store_(store), lock_fd_(lock_fd), pack_(first_pack), pack_fds_(store->dir()) {}

SnapshotWriter::~SnapshotWriter() {
  if (lock_fd_ >= 0) close(lock_fd_);
}

absl::Status SnapshotWriter::AddDir(absl::string_view path, uint32_t mode, int64_t mtime) {
  FERRY_CHECK(!in_file_);
  SnapshotEntry e;
  e.type = SnapshotEntry::Type::kDir;
  e.path = std::string(path);
  e.mode = mode;
  e.mtime = mtime;
  manifest_.entries.push_back(std::move(e));
  return absl::OkStatus();
}

absl::Status SnapshotWriter::BeginFile(absl::string_view path, uint32_t mode, int64_t mtime) {
  FERRY_CHECK(!in_file_);
  SnapshotEntry e;
  e.path = std::string(path);
  e.mode = mode;
  e.mtime = mtime;
  manifest_.entries.push_back(std::move(e));
  in_file_ = true;
  return absl::OkStatus();
}

absl::Status SnapshotWriter::Write(absl::string_view bytes) {
  FERRY_CHECK(in_file_);
  chunker_.Add(bytes);
  absl::string_view chunk;
  while (chunker_.Next(false, &chunk)) {
    ChunkRef ref;
    FERRY_RETURN_IF_ERROR(PutChunk(chunk, &ref));
    manifest_.entries.back().chunks.push_back(ref);
  }
  return absl::OkStatus();
}

absl::Status SnapshotWriter::EndFile() {
  FERRY_CHECK(in_file_);
  absl::string_view chunk;
  SnapshotEntry& e = manifest_.entries.back();
  while (chunker_.Next(true, &chunk)) {
    ChunkRef ref;
    FERRY_RETURN_IF_ERROR(PutChunk(chunk, &ref));
    e.chunks.push_back(ref);
  }
  e.size = 0;
  for (const auto& c : e.chunks) e.size += c.raw_len;
  in_file_ = false;
  return absl::OkStatus();
}

absl::Status SnapshotWriter::PutChunk(absl::string_view raw, ChunkRef* ref) {
  stats_.raw_bytes += raw.size();
  ++stats_.chunks;
  const ChunkId id = pipeline::Sha256(raw);
  if (const ChunkRef* have = Reusable(id)) {
    *ref = *have;
    return absl::OkStatus();
  }
  if (pack_file_ == nullptr) {
    FERRY_ASSIGN_OR_RETURN(pack_file_, PackAppender::Create(store_->PackPath(pack_), pack_));
    packs_written_.push_back(pack_);
  }
  char header[kChunkHeaderBytes];
  absl::string_view body;
  FERRY_RETURN_IF_ERROR(EncodeChunk(raw, id, store_->keys_.get(), &buffers_, header, &body));
  ref->id = id;
  ref->pack = pack_;
  ref->offset = pack_file_->size();
  ref->stored_len = static_cast<uint32_t>(body.size());
  ref->raw_len = static_cast<uint32_t>(raw.size());
  written_.emplace(id, *ref);
  ++stats_.new_chunks;
  stats_.new_stored_bytes += kChunkHeaderBytes + body.size();
  FERRY_RETURN_IF_ERROR(pack_file_->Append(header, body));
  if (pack_file_->size() >= kPackTargetBytes) {
    // Seal this pack (synced now, so Commit only syncs the last one) and start the next.
    FERRY_RETURN_IF_ERROR(ClosePack());
    ++pack_;
  }
  return absl::OkStatus();
}

absl::Status SnapshotWriter::ClosePack() {
  if (pack_file_ == nullptr) return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(pack_file_->Sync());
  pack_file_.reset();
  return absl::OkStatus();
}

absl::Status SnapshotWriter::ImportChunk(absl::string_view raw) {
  ChunkRef ref;
  return PutChunk(raw, &ref);
}

bool SnapshotWriter::HasChunk(const ChunkId& id) const { return Reusable(id) != nullptr; }

const ChunkRef* SnapshotWriter::Reusable(const ChunkId& id) const {
  if (auto it = written_.find(id); it != written_.end()) return &it->second;
  auto it = store_->chunks_.find(id);
  if (it == store_->chunks_.end()) return nullptr;
  if (store_->keys_ == nullptr) return &it->second;
  // A store with keys writes again what an older snapshot holds in the clear or under an
  // older key, so that retention can remove those copies (and the old key) in time.
  // (One descriptor per pack for the writer's life: a backup looks up every chunk it has.)
  char h[kChunkHeaderBytes];
  // Unreadable: written again, which is never wrong.
  const bool read = ReadChunkHeader(pack_fds_.Get(it->second.pack), it->second.offset, h);
  return read && SealedAsNew(h) ? &it->second : nullptr;
}

bool SnapshotWriter::SealedAsNew(const char* header) const {
  return storage::SealedAsNew(header, store_->keys_.get());
}

absl::Status SnapshotWriter::SyncPacks() {
  if (pack_file_ == nullptr) return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(pack_file_->Sync());
  if (!packs_written_.empty()) FERRY_RETURN_IF_ERROR(SyncDirectory(store_->dir() + "/packs"));
  return absl::OkStatus();
}

absl::Status SnapshotWriter::AdoptUnreferencedChunks() {
  for (uint32_t pack : store_->PackNumbers()) {
    if (pack >= pack_) continue;  // this writer's own
    absl::StatusOr<std::string> read = ReadWholeFile(store_->PackPath(pack));
    if (!read.ok()) return read.status();
    ForEachIntactChunk(*read, pack, [&](const ChunkRef& ref, const char* h) {
      // Only what a new chunk would be (sealed under the current key, when there are keys).
      if (store_->chunks_.count(ref.id) == 0 && SealedAsNew(h)) written_.emplace(ref.id, ref);
    });
  }
  return absl::OkStatus();
}

std::vector<ChunkRef> SnapshotWriter::Leftovers() const {
  std::vector<ChunkRef> out;
  for (const auto& [id, ref] : written_) {
    if (store_->chunks_.count(id) == 0) out.push_back(ref);
  }
  return out;
}

void SnapshotWriter::Adopt(const std::vector<ChunkRef>& chunks) {
  for (const ChunkRef& ref : chunks) {
    if (store_->chunks_.count(ref.id) == 0) written_.emplace(ref.id, ref);
  }
}

absl::StatusOr<SnapshotManifest> SnapshotWriter::CommitImported(SnapshotManifest manifest) {
  for (SnapshotEntry& e : manifest.entries) {
    for (ChunkRef& c : e.chunks) {
      if (const ChunkRef* have = Reusable(c.id)) {
        c = *have;
      } else {
        return absl::NotFoundError(absl::StrCat("snapshot ", manifest.id, ": chunk ", ChunkIdHex(c.id), " of ", e.path,
                                                " is not in the store yet"));
      }
    }
  }
  manifest_ = std::move(manifest);
  return Commit();
}

absl::StatusOr<SnapshotManifest> SnapshotWriter::Commit() {
  FERRY_CHECK(!in_file_);
  FERRY_CHECK(lock_fd_ >= 0);
  FERRY_RETURN_IF_ERROR(ClosePack());
  // Packs (and their directory entries) are durable before the manifest that names them
  // appears: a crash in between leaves unreferenced chunks, never a dangling manifest.
  if (!packs_written_.empty()) FERRY_RETURN_IF_ERROR(SyncDirectory(store_->dir() + "/packs"));
  FERRY_RETURN_IF_ERROR(WriteFileAtomically(store_->dir(), manifest_.id + kManifestSuffix,
                                            SerializeSnapshotManifest(manifest_)));
  store_->Committed(manifest_);
  close(lock_fd_);
  lock_fd_ = -1;
  return manifest_;
}

}  // namespace ferry::storage
