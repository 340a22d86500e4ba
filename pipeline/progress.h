// Durability levels of one stream and the wake-up that carries them back to the source.
// Vocabulary (docs/design.md): received (in memory) -> written (write issued) -> synced
// (fdatasync done) -> shipped (Kafka acked). Sources acknowledge only Acked().
#pragma once

#include <atomic>
#include <cstdint>

namespace ferry::pipeline {

// What a source may acknowledge upstream.
enum class AckPolicy {
  kLocal,          // synced in the local archive
  kLocalAndKafka,  // synced locally and shipped to Kafka with acks=all
};

// Thread-safe: sinks publish, the source reads. Positions only move forward. The epoch
// (PostgreSQL timeline) travels with the positions it qualifies.
class StreamProgress {
 public:
  explicit StreamProgress(AckPolicy policy = AckPolicy::kLocal);
  ~StreamProgress();
  StreamProgress(const StreamProgress&) = delete;
  StreamProgress& operator=(const StreamProgress&) = delete;

  void SetReceived(uint64_t pos) { Advance(received_, pos); }
  void SetWritten(uint64_t pos) { Advance(written_, pos); }
  // Wakes the source (notify_fd) so a synchronous commit is acknowledged at once; `wake`
  // false when the source's own thread synced it (Batcher::EndBurst) and sees it on return.
  void SetSynced(uint64_t pos, bool wake = true);
  void SetShipped(uint64_t pos);

  uint64_t received() const { return received_.load(std::memory_order_acquire); }
  uint64_t written() const { return written_.load(std::memory_order_acquire); }
  uint64_t synced() const { return synced_.load(std::memory_order_acquire); }
  uint64_t shipped() const { return shipped_.load(std::memory_order_acquire); }

  // The position the source may report as durable under its policy.
  uint64_t Acked() const;

  // Sets every level to `pos` (at start-up: what the archive already holds durably; at a new
  // epoch: where it starts). Under kLocalAndKafka, shipped only comes down to `pos`: what
  // Kafka holds is the shipper's to report.
  void Reset(uint64_t pos);

  // An eventfd that becomes readable when Acked() may have moved; the source polls it next to
  // its socket and calls ConsumeNotification() after waking.
  int notify_fd() const { return notify_fd_; }
  void ConsumeNotification();
  void Notify();

 private:
  static void Advance(std::atomic<uint64_t>& level, uint64_t pos);

  const AckPolicy policy_;
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> synced_{0};
  std::atomic<uint64_t> shipped_{0};
  int notify_fd_ = -1;
};

}  // namespace ferry::pipeline
