// The two halves of the mirror's work on a batch of Kafka messages: the stream importer
// (frames into the archive's stream logs) and the snapshot importer (chunks and manifests into
// the snapshot stores), and the counters both keep for Mirror::State(). Private to cross_region/.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "cross_region/kafka_internal.h"
#include "cross_region/mirror.h"
#include "pipeline/frame.h"
#include "storage/archive.h"
#include "storage/snapshot_store.h"

namespace ferry::cross_region {

// What Mirror::State() reads (from any thread), written on the mirror's thread.
struct MirrorStats {
  absl::Mutex mu;
  std::vector<MirroredStream> shown ABSL_GUARDED_BY(mu);
  uint64_t snapshots_imported ABSL_GUARDED_BY(mu) = 0;
  uint64_t chunks_imported ABSL_GUARDED_BY(mu) = 0;
  std::vector<double> lag_ring ABSL_GUARDED_BY(mu);  // recent frame lags, seconds
  size_t lag_next ABSL_GUARDED_BY(mu) = 0;
};

// The stream topics' messages: frames reassembled from parts, checked, deduplicated, and
// queued for the next group commit; side files and the source's identity written as they come.
class StreamImporter {
 public:
  StreamImporter(storage::Archive& archive, MirrorStats& stats) : archive_(archive), stats_(stats) {}

  // A message of `topic`, stream `kind` of `source`. Sets *done to false for a frame's part
  // other than the last: its offset is committed only with the frame's last part.
  absl::Status Handle(const std::string& topic, const std::string& source, pipeline::StreamKind kind,
                      const rd_kafka_message_t* m, bool* done);
  // Writes every stream's queued frames (synced when it returns).
  absl::Status Flush();
  // The streams as /metrics shows them, with each topic's lag behind consumer `rk`'s position.
  std::vector<MirroredStream> Shown(rd_kafka_t* rk) const;

 private:
  // Frames arriving for one stream.
  struct Stream {
    std::string source;
    pipeline::StreamKind kind;
    storage::StreamLog* log = nullptr;
    pipeline::EncodedFrames pending;  // to be written at the end of the batch
    // The stream's end, counting pending frames.
    bool have_end = false;
    uint32_t end_epoch = 0;
    uint64_t end_pos = 0;
    // The frame being reassembled.
    std::string parts;
    uint32_t next_part = 0;
    uint64_t parts_end = 0;
    MirroredStream shown;
  };

  // The stream of `topic`, opened in the archive on its first message.
  absl::StatusOr<Stream*> Find(const std::string& topic, const std::string& source, pipeline::StreamKind kind);
  // A side file ("file") or the source's identity ("identity").
  absl::Status HandleSideMessage(Stream& s, absl::string_view type, const rd_kafka_message_t* m);
  absl::Status HandleIdentity(Stream& s, absl::string_view value);
  // A frame, or one part of it.
  absl::Status HandleFrame(Stream& s, const rd_kafka_message_t* m, bool* done);
  // Checks a whole frame against its headers and the stream's end; queues it unless redelivered.
  absl::Status AcceptFrame(Stream& s, absl::string_view bytes, const rd_kafka_message_t* m);
  absl::Status FlushStream(Stream& s);

  storage::Archive& archive_;
  MirrorStats& stats_;
  std::map<std::string, Stream> streams_;  // by topic
};

// The chunk and manifest topics' messages: chunks into an open writer of the source's snapshot
// store, manifests committed once their chunks are in.
class SnapshotImporter {
 public:
  SnapshotImporter(storage::Archive& archive, MirrorStats& stats) : archive_(archive), stats_(stats) {}

  absl::Status HandleChunk(const std::string& source, const rd_kafka_message_t* m);
  absl::Status HandleManifest(const std::string& source, const rd_kafka_message_t* m);
  // Commits the manifests whose chunks are all in and syncs the chunks written. The sources
  // left with a manifest waiting for chunks go to *blocked.
  absl::Status EndBatch(std::set<std::string>* blocked);

 private:
  // A source's snapshots arriving.
  struct Source {
    std::unique_ptr<storage::SnapshotStore> store;
    std::unique_ptr<storage::SnapshotWriter> writer;
    std::deque<storage::SnapshotManifest> waiting;  // manifests whose chunks have not all arrived
    bool unsynced = false;                          // chunks written since the last SyncPacks
  };

  // The source's store and writer, opened (creating the store) on first use.
  absl::StatusOr<Source*> Open(const std::string& source);
  absl::Status TryCommitManifests(Source& st);

  storage::Archive& archive_;
  MirrorStats& stats_;
  std::map<std::string, Source> sources_;  // by source name
};

}  // namespace ferry::cross_region
