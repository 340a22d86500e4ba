// The standby region's mirror (`ferry mirror`): consumes a region's topics and appends the
// same frames to a local archive, so both archives hold the same bytes and verify to the same
// digests. Snapshots arrive as chunks and manifests and are imported into the local stores.
//
// Delivery is at least once; the mirror makes it exactly once: a frame at or before the
// stream's end is a redelivery and is skipped, a frame that does not start at the end is a
// gap and stops the mirror (never a silent hole). Kafka offsets are committed only after what
// they cover is synced.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "cross_region/kafka.h"
#include "storage/durable_file.h"

namespace ferry::cross_region {

struct MirrorOptions {
  KafkaOptions kafka;  // topic_prefix: the primary region's
  std::string archive_path;
  storage::WriterKind writer = storage::WriterKind::kPosix;
  uint64_t segment_bytes = 64ull << 20;
  std::vector<std::string> sources;
  std::string group_id;
};

// One mirrored stream, for /metrics.
struct MirroredStream {
  std::string source;
  std::string stream;
  uint32_t epoch = 0;
  uint64_t position = 0;       // end of the last frame synced
  int64_t last_arrival_us = 0;  // that frame's arrival_us in the primary region
  uint64_t frames = 0;          // frames appended
  uint64_t duplicates = 0;      // redelivered frames skipped
  int64_t kafka_lag = -1;       // messages behind the partition's high watermark (-1 unknown)
  double lag_seconds = 0;       // primary's arrival -> here, for the last frame; 0 when caught up
};

struct MirrorState {
  std::string group_id;
  std::vector<MirroredStream> streams;
  uint64_t snapshots = 0;  // manifests imported
  uint64_t chunks = 0;     // chunks imported
  // Frame lag (primary arrival -> synced here) over the recent frames, in seconds.
  double lag_p50 = 0;
  double lag_p99 = 0;
  uint64_t lag_samples = 0;
};

// Thread-safe: Stop and State from any thread while Run runs.
class Mirror {
 public:
  // Opens (creating) the archive and takes its lock; checks the Kafka settings.
  static absl::StatusOr<std::unique_ptr<Mirror>> Create(const MirrorOptions& options);
  ~Mirror();

  // Consumes until Stop (OK) or a fatal error: a gap, a damaged message, an archive error.
  absl::Status Run();
  void Stop();
  MirrorState State();

 private:
  struct Impl;
  explicit Mirror(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::cross_region
