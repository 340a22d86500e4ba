// The mirror's snapshot importer: chunks from the chunk topics into the local snapshot stores
// (checked against their ids, opened when sealed), manifests committed once their chunks are in.
#include <utility>

#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cross_region/mirror_import.h"
#include "pipeline/check.h"
#include "pipeline/compress.h"
#include "pipeline/sha256.h"
#include "storage/durable_file.h"

namespace ferry::cross_region {

namespace {

// A writer of `store`, waiting while someone else holds its lock: an operator's `ferry
// retention` or `ferry backup` on this archive, or a child process of ours forked while our
// previous writer held the lock and not yet exec'd (the descriptor is O_CLOEXEC, but between
// fork and exec it keeps the flock). The mirror is the only importer, so the wait is short;
// failing instead would stop the mirror for good. Gives up after `patience`. Begin reports
// that lock, and only it, as kFailedPrecondition (snapshot_store.h); other errors return at once.
absl::StatusOr<std::unique_ptr<storage::SnapshotWriter>> BeginWhenUnlocked(storage::SnapshotStore& store,
                                                                           absl::Duration patience) {
  const absl::Time give_up = absl::Now() + patience;
  bool logged = false;
  while (true) {
    auto writer = store.Begin(0, {});
    if (writer.ok() || !absl::IsFailedPrecondition(writer.status()) || absl::Now() >= give_up) return writer;
    if (!logged) {
      spdlog::warn("event=snapshot_store_locked error=\"{}\" action=waiting", std::string(writer.status().message()));
      logged = true;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

}  // namespace

absl::StatusOr<SnapshotImporter::Source*> SnapshotImporter::Open(const std::string& source) {
  Source& st = sources_[source];
  if (st.store == nullptr) {
    FERRY_RETURN_IF_ERROR(storage::ValidateSourceName(source));
    FERRY_RETURN_IF_ERROR(storage::CreateDirectory(archive_.SourceDir(source)));  // the archive's modes
    FERRY_ASSIGN_OR_RETURN(st.store, storage::SnapshotStore::Open(archive_.SnapshotDir(source), true));
  }
  if (st.writer == nullptr) {
    FERRY_ASSIGN_OR_RETURN(st.writer, BeginWhenUnlocked(*st.store, absl::Minutes(2)));
    // Chunks synced before a crash whose manifest never committed: their Kafka offsets may
    // be committed already, so they will not come again.
    FERRY_RETURN_IF_ERROR(st.writer->AdoptUnreferencedChunks());
  }
  return &st;
}

absl::Status SnapshotImporter::HandleChunk(const std::string& source, const rd_kafka_message_t* m) {
  FERRY_ASSIGN_OR_RETURN(Source * st, Open(source));
  FERRY_ASSIGN_OR_RETURN(uint64_t raw_len, HeaderNumber(m, kHeaderRawLen));
  if (raw_len > pipeline::kMaxFramePayload) {  // chunks are far smaller; never allocate what a header claims
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": chunk claims ", raw_len, " bytes"));
  }
  const std::string key(static_cast<const char*>(m->key), m->key_len);
  std::string raw, opened;
  absl::string_view payload(static_cast<const char*>(m->payload), m->len);
  if (auto key_id = HeaderValue(m, kHeaderKeyId)) {
    uint32_t id = 0;
    if (!absl::SimpleAtoi(*key_id, &id) || id == 0 || id > 65535) {
      return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": bad ", kHeaderKeyId, " \"", *key_id, "\""));
    }
    const pipeline::Keyring* keys = archive_.keys().get();
    if (keys == nullptr || !keys->Has(static_cast<uint16_t>(id))) {
      const absl::Status missing = pipeline::MissingKeyError(static_cast<uint16_t>(id), keys);
      return absl::FailedPreconditionError(absl::StrCat("kafka message ", Where(m), ": chunk ", missing.message()));
    }
    absl::Status st = keys->Open(static_cast<uint16_t>(id), key, payload, &opened);
    if (!st.ok()) return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": chunk ", st.message()));
    payload = opened;
  }
  FERRY_RETURN_IF_ERROR(pipeline::DecompressZstd(payload, raw_len, Where(m), &raw));
  const storage::ChunkId id = pipeline::Sha256(raw);
  if (storage::ChunkIdHex(id) != key) {
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": chunk bytes do not hash to its key ", key));
  }
  if (st->writer->HasChunk(id)) return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(st->writer->ImportChunk(raw));
  st->unsynced = true;
  absl::MutexLock lock(&stats_.mu);
  ++stats_.chunks_imported;
  return absl::OkStatus();
}

absl::Status SnapshotImporter::HandleManifest(const std::string& source, const rd_kafka_message_t* m) {
  FERRY_ASSIGN_OR_RETURN(Source * st, Open(source));
  FERRY_ASSIGN_OR_RETURN(storage::SnapshotManifest manifest,
                         storage::ParseSnapshotManifest(absl::string_view(static_cast<const char*>(m->payload), m->len),
                                                        Where(m)));
  if (st->store->Find(manifest.id) != nullptr) return absl::OkStatus();
  // Its chunks come on another topic and may still be on their way: EndBatch commits it once
  // they are in, and the mirror holds the topic's offset back until then.
  st->waiting.push_back(std::move(manifest));
  return absl::OkStatus();
}

absl::Status SnapshotImporter::TryCommitManifests(Source& st) {
  while (!st.waiting.empty()) {
    auto committed = st.writer->CommitImported(st.waiting.front());
    if (absl::IsNotFound(committed.status())) return absl::OkStatus();  // chunks still to come
    if (!committed.ok()) return committed.status();
    spdlog::info("event=snapshot_imported id={} kind={}", committed->id, committed->Get("kind"));
    st.waiting.pop_front();
    // Chunks of later snapshots that came before this manifest go on to the next writer.
    const std::vector<storage::ChunkRef> leftovers = st.writer->Leftovers();
    st.writer.reset();
    st.unsynced = false;
    FERRY_ASSIGN_OR_RETURN(st.writer, BeginWhenUnlocked(*st.store, absl::Minutes(2)));
    st.writer->Adopt(leftovers);
    absl::MutexLock lock(&stats_.mu);
    ++stats_.snapshots_imported;
  }
  return absl::OkStatus();
}

absl::Status SnapshotImporter::EndBatch(std::set<std::string>* blocked) {
  for (auto& [source, st] : sources_) {
    FERRY_RETURN_IF_ERROR(TryCommitManifests(st));
    if (st.unsynced) {
      FERRY_RETURN_IF_ERROR(st.writer->SyncPacks());
      st.unsynced = false;
    }
    if (!st.waiting.empty()) blocked->insert(source);
  }
  return absl::OkStatus();
}

}  // namespace ferry::cross_region
