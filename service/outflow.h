// One stream on its way out of the service: the batcher in front of the archive and, with
// [kafka], the shipper behind it. Internal to service/.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "cross_region/kafka.h"
#include "cross_region/shipper.h"
#include "pipeline/batcher.h"
#include "pipeline/cipher.h"
#include "service/disk_guard.h"
#include "service/source_runner.h"
#include "storage/stream_log.h"

namespace ferry::service {

// What every stream's outflow shares, owned by the service.
struct OutflowContext {
  int zstd_level = 1;
  std::shared_ptr<const pipeline::Keyring> keys;  // null: frames stored in the clear
  DiskGuard* disk_guard = nullptr;
  cross_region::KafkaOptions kafka;  // no brokers: no shipper
  std::string archive_path;
  bool kafka_tombstones = true;
};

// The batcher and the shipper are published on the runner (for /metrics and Stop) while they
// live. The shipper reports into the batcher's progress and is woken by its syncs, so the two
// stop in that order: the batcher (its last frames synced), then the shipper (which ships them).
class Outflow {
 public:
  Outflow(const OutflowContext& context, SourceRunner* runner, storage::StreamLog* log, pipeline::StreamKind kind);
  ~Outflow();

  pipeline::Batcher& batcher() { return *batcher_; }

  // Returns the batcher's error, if any. Idempotent.
  absl::Status Stop();

 private:
  SourceRunner* const runner_;
  const std::shared_ptr<std::atomic<cross_region::StreamShipper*>> link_;
  std::unique_ptr<pipeline::Batcher> batcher_;
  std::unique_ptr<cross_region::StreamShipper> shipper_;
};

}  // namespace ferry::service
