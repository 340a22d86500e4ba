// The Kafka fanout: ships a source's streams and snapshots from the local archive to Kafka.
//
// A shipper tails the archive (a read-only StreamLog, refreshed when the batcher syncs), not
// the batcher's memory: what it ships is exactly the archived bytes, Kafka being down never
// holds up local archiving, and catching up after an outage is the same code path as live
// shipping. Where to start is read from Kafka itself (the last message's headers), so a
// restart neither skips nor repeats a frame, and no local state can disagree with the topic.
// Snapshots have a shipper of their own (snapshot_shipper.h, included here for callers).
//
// The pg-changes stream is also published as Debezium events, one topic per table. A frame's
// events are delivered before the frame itself is sent, so the frame topic's tail also says
// which events are out: after a restart they are at least once (the frame after the tail may
// have had its events delivered already), never missing. Records are published as they come,
// not held until their transaction is complete, so memory stays bounded: the parts of a
// transaction cut off by a restart of the source (it is archived again whole) and the reads
// of an initial snapshot that never completed are published too.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "cross_region/kafka.h"
#include "cross_region/snapshot_shipper.h"
#include "pipeline/frame.h"
#include "pipeline/progress.h"

namespace ferry::cross_region {

struct ShipperStats {
  std::atomic<bool> connected{false};   // a session has found Kafka's tail and is shipping
  std::atomic<uint64_t> frames{0};      // frames delivered (acks=all)
  std::atomic<uint64_t> bytes{0};       // frame bytes delivered
  std::atomic<uint64_t> sessions{0};    // producer sessions started (1 + restarts after errors)
  std::atomic<uint32_t> shipped_epoch{0};
  std::atomic<uint64_t> shipped_pos{0};  // end of the last frame delivered
  std::atomic<int64_t> shipped_arrival_us{0};  // that frame's arrival_us
  std::atomic<uint64_t> change_events{0};  // pg-changes: Debezium messages delivered to table topics
};

struct StreamShipperOptions {
  KafkaOptions kafka;
  std::string archive_path;
  std::string source;
  pipeline::StreamKind kind = pipeline::StreamKind::kPgWal;
  // Delivered positions are reported here (SetShipped), for ack = "local+kafka". May be null.
  pipeline::StreamProgress* progress = nullptr;
  // Frames read from the archive but not yet delivered; reading pauses above this.
  size_t max_in_flight_bytes = 16 << 20;
  // pg-changes: a Debezium tombstone after each delete event.
  bool tombstones = true;
};

// Ships one stream on a thread of its own. Thread-safe.
class StreamShipper {
 public:
  explicit StreamShipper(StreamShipperOptions options);
  ~StreamShipper();  // Stop()

  void Start();
  // New frames are synced in the archive: look now rather than at the next poll.
  void Notify();
  // Delivers what is in flight (waiting at most a few seconds), then stops.
  void Stop();

  const ShipperStats& stats() const { return stats_; }
  const StreamShipperOptions& options() const { return options_; }

 private:
  class Session;
  void Run();

  const StreamShipperOptions options_;
  ShipperStats stats_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ferry::cross_region
