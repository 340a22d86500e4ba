#include "service/disk_guard.h"

#include <sys/statvfs.h>

#include <spdlog/spdlog.h>

namespace ferry::service {

bool DiskGuard::Low() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (now - checked_ < absl::Seconds(1)) return low_;
  checked_ = now;
  struct statvfs fs;
  if (statvfs(path_.c_str(), &fs) != 0 || fs.f_blocks == 0) return low_;  // keep the last answer
  free_ = static_cast<double>(fs.f_bavail) / static_cast<double>(fs.f_blocks);
  const bool low = free_ < min_free_;
  if (low != low_) {
    // Logged once per change, not per poll.
    if (low) {
      spdlog::error("event=disk_low path={} free_percent={:.1f} min_free_percent={:.1f} action=holding_writes_and_acks",
                    path_, free_ * 100, min_free_ * 100);
    } else {
      spdlog::info("event=disk_ok path={} free_percent={:.1f} action=resumed", path_, free_ * 100);
    }
  }
  low_ = low;
  return low_;
}

double DiskGuard::FreeFraction() {
  (void)Low();
  absl::MutexLock lock(&mu_);
  return free_;
}

}  // namespace ferry::service
