#include "pipeline/read_pacer.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>

namespace ferry::pipeline {

void ReadPacer::Pace(absl::Duration pace, size_t last_burst_bytes, int64_t max_wait_ms) {
  using std::chrono::steady_clock;
  const steady_clock::time_point due = last_ + absl::ToChronoNanoseconds(pace);
  steady_clock::time_point now = steady_clock::now();
  if (pace > absl::ZeroDuration() && last_burst_bytes < kBusyBytes) {
    while (now < due) {
      const int64_t ms = std::min<int64_t>(
          max_wait_ms, std::chrono::ceil<std::chrono::milliseconds>(due - now).count());
      if (ms <= 0) break;
      pollfd p{stop_fd_, POLLIN, 0};
      const int rc = poll(&p, 1, static_cast<int>(ms));
      now = steady_clock::now();
      if (rc < 0 && errno == EINTR) continue;
      break;  // the stop event, the time is up, or poll failed (the caller's wait reports it)
    }
  }
  last_ = now;
}

}  // namespace ferry::pipeline
