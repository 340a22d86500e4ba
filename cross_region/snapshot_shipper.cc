// The snapshot shipper: a session reads what the manifest topic has, then ships every snapshot
// of the store it lacks, chunk by chunk, each manifest after its chunks are delivered.
#include "cross_region/snapshot_shipper.h"

#include <functional>
#include <set>
#include <utility>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "cross_region/kafka_internal.h"
#include "cross_region/producer.h"
#include "pipeline/check.h"
#include "pipeline/compress.h"
#include "storage/archive.h"
#include "storage/snapshot_store.h"

namespace ferry::cross_region {

namespace {

// Chunk bytes produced and not yet delivered; producing waits above this.
constexpr size_t kMaxChunkBytesInFlight = 32u << 20;

// Ships the chunks of one session's snapshots to the chunk topic, each chunk once.
class ChunkSender {
 public:
  ChunkSender(Producer& producer, std::string topic, const std::function<bool()>& cancelled)
      : producer_(producer), topic_(std::move(topic)), cancelled_(cancelled) {}

  // The chunks of a snapshot the manifest topic has: Kafka has them already.
  void MarkSent(const storage::SnapshotManifest& m) {
    for (const auto& e : m.entries) {
      for (const auto& c : e.chunks) sent_.insert(c.id);
    }
  }

  // Produces the chunks of `m` not sent yet (compressed, sealed under the archive's current
  // key when it has one); kCancelled as soon as the shipper stops.
  absl::Status Send(const storage::SnapshotManifest& m, const storage::SnapshotStore& store,
                    const pipeline::Keyring* keys) {
    for (const storage::SnapshotEntry& e : m.entries) {
      for (const storage::ChunkRef& c : e.chunks) {
        if (!sent_.insert(c.id).second) continue;
        FERRY_RETURN_IF_ERROR(SendChunk(e, c, store, keys));
        while (producer_.in_flight_bytes() > kMaxChunkBytesInFlight) FERRY_RETURN_IF_ERROR(producer_.Poll(20));
        if (cancelled_()) return absl::CancelledError("stopping");
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status SendChunk(const storage::SnapshotEntry& e, const storage::ChunkRef& c,
                         const storage::SnapshotStore& store, const pipeline::Keyring* keys) {
    storage::SnapshotEntry one;
    one.path = e.path;
    one.chunks = {c};
    FERRY_RETURN_IF_ERROR(
        store.ReadFile(one, [&](absl::string_view raw) { return pipeline::CompressZstd(raw, 1, &compressed_); }));
    const std::string key = storage::ChunkIdHex(c.id);
    Headers headers = {{kHeaderType, "chunk"}, {kHeaderRawLen, absl::StrCat(c.raw_len)}};
    if (keys != nullptr) {
      sealed_.clear();
      FERRY_RETURN_IF_ERROR(keys->Seal(keys->current_id(), key, compressed_, &sealed_));
      compressed_.swap(sealed_);
      headers.emplace_back(kHeaderKeyId, absl::StrCat(keys->current_id()));
    }
    return producer_.Produce(topic_, -1, key, compressed_, headers, {});
  }

  Producer& producer_;
  const std::string topic_;
  const std::function<bool()>& cancelled_;
  std::set<storage::ChunkId> sent_;
  std::string compressed_, sealed_;  // one chunk's bytes, reused
};

}  // namespace

SnapshotShipper::SnapshotShipper(SnapshotShipperOptions options) : options_(std::move(options)) {}

SnapshotShipper::~SnapshotShipper() { Stop(); }

void SnapshotShipper::Start() {
  FERRY_CHECK(!thread_.joinable());
  thread_ = std::thread([this] {
    absl::StatusCode last_code = absl::StatusCode::kOk;
    while (true) {
      absl::Status st = Session();
      if (!Wait(absl::Seconds(5))) return;
      if (st.code() != last_code) {
        spdlog::warn("source={} event=kafka_snapshots_unavailable error=\"{}\" action=retrying", options_.source,
                     std::string(st.message()));
      }
      last_code = st.code();
    }
  });
}

void SnapshotShipper::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool SnapshotShipper::Wait(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  return !mu_.AwaitWithTimeout(absl::Condition(&stop_), d);
}

absl::Status SnapshotShipper::Session() {
  const std::string manifest_topic = ManifestTopic(options_.kafka.topic_prefix, options_.source);
  FERRY_ASSIGN_OR_RETURN(auto producer, Producer::Create(options_.kafka, nullptr));
  // What the manifest topic already has (keys are snapshot ids); it is small.
  std::set<std::string> shipped;
  const std::function<bool()> cancelled = [this] {
    absl::MutexLock lock(&mu_);
    return stop_;
  };
  FERRY_RETURN_IF_ERROR(ReadPartition(
      options_.kafka, manifest_topic, 0, 0, 60000,
      [&](const rd_kafka_message_t* m) {
        shipped.emplace(static_cast<const char*>(m->key), m->key_len);
        return true;
      },
      cancelled));
  ChunkSender chunks(*producer, ChunkTopic(options_.kafka.topic_prefix, options_.source), cancelled);
  bool first = true;
  while (first || Wait(absl::Seconds(2))) {
    first = false;
    auto archive = storage::Archive::Open(options_.archive_path, storage::ArchiveOptions{});
    if (!archive.ok()) return archive.status();
    auto store = storage::SnapshotStore::Open((*archive)->SnapshotDir(options_.source), false);
    if (!store.ok()) {
      if (absl::IsNotFound(store.status())) continue;  // no snapshot yet
      return store.status();
    }
    for (const storage::SnapshotManifest& m : (*store)->snapshots()) {
      if (shipped.count(m.id) > 0) chunks.MarkSent(m);
    }
    for (const storage::SnapshotManifest& m : (*store)->snapshots()) {
      if (shipped.count(m.id) > 0) continue;
      FERRY_RETURN_IF_ERROR(chunks.Send(m, **store, (*archive)->keys().get()));
      // The manifest only once every chunk it names is in Kafka.
      FERRY_RETURN_IF_ERROR(producer->Drain(absl::Minutes(10), cancelled));
      FERRY_RETURN_IF_ERROR(producer->Produce(manifest_topic, 0, m.id, storage::SerializeSnapshotManifest(m),
                                              {{kHeaderType, "manifest"}}, {}));
      FERRY_RETURN_IF_ERROR(producer->Drain(absl::Minutes(1), cancelled));
      shipped.insert(m.id);
      shipped_.fetch_add(1);
      spdlog::info("source={} event=kafka_snapshot_shipped id={} kind={}", options_.source, m.id, m.Get("kind"));
    }
  }
  return absl::OkStatus();
}

}  // namespace ferry::cross_region
