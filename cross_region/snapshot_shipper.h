// The Kafka fanout of a source's snapshots: ships each committed snapshot from the local archive's
// snapshot store, its chunks first, then its manifest (see shipper.h for the streams).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cross_region/kafka.h"

namespace ferry::cross_region {

struct SnapshotShipperOptions {
  KafkaOptions kafka;
  std::string archive_path;
  std::string source;
};

// Ships a source's committed snapshots: each chunk the topic does not have yet to the chunk
// topic (keyed by id), then, once all are delivered, the manifest to the manifest topic.
class SnapshotShipper {
 public:
  explicit SnapshotShipper(SnapshotShipperOptions options);
  ~SnapshotShipper();
  void Start();
  void Stop();
  std::atomic<uint64_t>& shipped() { return shipped_; }  // manifests delivered

 private:
  absl::Status Session();
  bool Wait(absl::Duration d);  // false once stopped

  const SnapshotShipperOptions options_;
  std::atomic<uint64_t> shipped_{0};
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ferry::cross_region
