// ReadPacer: a source reads its socket in bursts its sink's commit_delay apart.
//
// While the sink spaces its group commits by commit_delay, waking to read each message the
// moment it arrives makes nothing durable sooner; it only costs a wake-up per message (under
// pgbench, ~3,000 a second, which was half of ferry's CPU as an asynchronous capturer). Paced,
// the socket gathers what arrives and one wake-up takes it all. Two things end a pause early
// or skip it: the source's stop event, and a last burst of kBusyBytes or more (the stream is
// fast: read on, so that neither the socket nor the server's send buffer fills).
#pragma once

#include <chrono>
#include <cstddef>

#include "absl/time/time.h"

namespace ferry::pipeline {

class ReadPacer {
 public:
  static constexpr size_t kBusyBytes = 128 << 10;  // Linux's default TCP receive buffer

  explicit ReadPacer(int stop_fd) : stop_fd_(stop_fd) {}

  // Call before waiting for input. `pace` is the sink's commit_delay now, `last_burst_bytes`
  // what the previous read took in all, `max_wait_ms` the caller's own next deadline (a status
  // message due). Waits until `pace` has passed since the previous call returned, at most
  // max_wait_ms; a readable stop_fd ends it at once (and is left readable for the caller).
  void Pace(absl::Duration pace, size_t last_burst_bytes, int64_t max_wait_ms);

 private:
  const int stop_fd_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace ferry::pipeline
