// The disk-space guard of the archive's file system: while free space is under
// [archive] min_free_percent, batchers hold their writes (and so their acknowledgements)
// instead of filling the disk.
#pragma once

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ferry::service {

// Low() while the free fraction of `path`'s file system is under `min_free` (rechecked at
// most once a second; changes logged once). Thread-safe.
class DiskGuard {
 public:
  DiskGuard(std::string path, double min_free) : path_(std::move(path)), min_free_(min_free) {}
  bool Low();
  double FreeFraction();

 private:
  const std::string path_;
  const double min_free_;
  absl::Mutex mu_;
  absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool low_ ABSL_GUARDED_BY(mu_) = false;
  double free_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace ferry::service
