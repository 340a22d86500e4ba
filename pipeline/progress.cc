#include "pipeline/progress.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "pipeline/check.h"

namespace ferry::pipeline {

StreamProgress::StreamProgress(AckPolicy policy) : policy_(policy) {
  notify_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  FERRY_CHECK(notify_fd_ >= 0);
}

StreamProgress::~StreamProgress() { close(notify_fd_); }

void StreamProgress::Advance(std::atomic<uint64_t>& level, uint64_t pos) {
  uint64_t cur = level.load(std::memory_order_relaxed);
  while (pos > cur && !level.compare_exchange_weak(cur, pos, std::memory_order_acq_rel)) {
  }
}

void StreamProgress::SetSynced(uint64_t pos, bool wake) {
  Advance(synced_, pos);
  if (wake) Notify();
}

void StreamProgress::SetShipped(uint64_t pos) {
  Advance(shipped_, pos);
  if (policy_ == AckPolicy::kLocalAndKafka) Notify();
}

uint64_t StreamProgress::Acked() const {
  const uint64_t s = synced();
  if (policy_ == AckPolicy::kLocal) return s;
  const uint64_t k = shipped();
  return s < k ? s : k;
}

void StreamProgress::Reset(uint64_t pos) {
  received_.store(pos, std::memory_order_release);
  written_.store(pos, std::memory_order_release);
  synced_.store(pos, std::memory_order_release);
  if (policy_ == AckPolicy::kLocal) {
    shipped_.store(pos, std::memory_order_release);
  } else {
    // What Kafka holds is for the shipper to say (it starts at 0 and learns Kafka's tail): a
    // reset never claims more. At a new epoch that starts lower, shipped comes down with it.
    uint64_t cur = shipped_.load(std::memory_order_acquire);
    while (cur > pos && !shipped_.compare_exchange_weak(cur, pos, std::memory_order_acq_rel)) {
    }
  }
}

void StreamProgress::Notify() {
  uint64_t one = 1;
  // EAGAIN means the counter is saturated, i.e. a wake-up is already pending: nothing lost.
  [[maybe_unused]] ssize_t n = write(notify_fd_, &one, sizeof(one));
}

void StreamProgress::ConsumeNotification() {
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(notify_fd_, &v, sizeof(v));
}

}  // namespace ferry::pipeline
