// The two interfaces where sources and sinks meet. A source writes records into a StreamSink;
// the Batcher (batcher.h) turns them into frames for a FrameConsumer (the archive, Kafka).
// A source never sees a FrameConsumer and a consumer never sees a source.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "pipeline/frame.h"
#include "pipeline/position.h"
#include "pipeline/progress.h"

namespace ferry::pipeline {

// Where a source hands its stream. One producer thread per sink.
class StreamSink {
 public:
  virtual ~StreamSink() = default;

  // Queues one record that begins at `start` (for byte streams, the previous record's end_pos
  // in the same epoch). Blocks while the queue is full (back-pressure). Returns the sink's
  // first error once it has failed: the source must stop, nothing more will be synced.
  virtual absl::Status Append(StreamPosition start, Record record) = 0;

  // Append for a run of contiguous records (each starts where the one before ends), taking
  // them from *records (left empty on success): one hand-over for many small records.
  virtual absl::Status AppendRun(StreamPosition start, std::vector<Record>* records) = 0;

  // Stores a small named side file of the stream (a timeline history file) durably before
  // returning. Ordered after every record appended before it.
  virtual absl::Status PutFile(absl::string_view name, absl::string_view contents) = 0;

  // Waits until everything appended so far is synced, or returns the sink's error.
  virtual absl::Status Drain() = 0;

  virtual StreamProgress& progress() = 0;

  // For a source that reads its input in bursts (everything its connection has buffered):
  // records appended between BeginBurst and EndBurst do not wake the sink's writer thread, and
  // EndBurst makes them durable on the calling thread when no group commit is under way. On
  // the path a synchronous commit waits on, there is then no hand-off between threads at all:
  // receive, write, sync and acknowledge happen on the source's thread, as in pg_receivewal.
  // When a group commit is under way, the sink waits between commits (commit_delay), or the
  // burst grows to a batch's size, the records go to the writer thread instead (EndBurst then
  // returns at once). The default does neither.
  virtual void BeginBurst() {}
  virtual absl::Status EndBurst() { return absl::OkStatus(); }

  // How long the sink waits between group commits (0: it writes as soon as it can). Nothing a
  // source hands over becomes durable sooner, so a source may read its input in bursts this
  // far apart: fewer wake-ups for the same latency.
  virtual absl::Duration commit_delay() = 0;
};

// Encoded frames of one stream, back to back in one buffer, ready for a single write.
struct EncodedFrames {
  std::string bytes;
  std::vector<FrameHeader> headers;  // in order; header i covers frame_size() bytes
};

// Receives frames in stream order. Write returns only once the frames are durable (synced).
class FrameConsumer {
 public:
  virtual ~FrameConsumer() = default;
  // On error, *durable says how many leading frames of `frames` were nevertheless made durable
  // (a batch that spans segments can fail in its second write); a retry sends the rest.
  virtual absl::Status Write(const EncodedFrames& frames, size_t* durable) = 0;
  virtual absl::Status PutFile(absl::string_view name, absl::string_view contents) = 0;
};

// Where a source hands a snapshot (a base backup's files, an RDB image): directories and
// files one at a time, each file's bytes in order. The storage side chunks and stores them.
class SnapshotSink {
 public:
  virtual ~SnapshotSink() = default;
  virtual absl::Status AddDir(absl::string_view path, uint32_t mode, int64_t mtime) = 0;
  virtual absl::Status BeginFile(absl::string_view path, uint32_t mode, int64_t mtime) = 0;
  virtual absl::Status Write(absl::string_view bytes) = 0;
  virtual absl::Status EndFile() = 0;
};

}  // namespace ferry::pipeline
