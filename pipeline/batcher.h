// Batcher: the group-commit engine between a source and its FrameConsumer. Records queue up
// while the previous batch is being written and synced; the next batch takes them all. A frame
// closes on size, or as soon as the writer is idle, so a lone synchronous commit never waits
// for company.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "pipeline/sink.h"

namespace ferry::pipeline {

struct BatcherOptions {
  size_t max_frame_raw_bytes = 1 << 20;   // a frame closes when its payload reaches this
  // One group commit writes at most this much payload, and Append blocks above max_queued_bytes
  // (back-pressure). They bound the stream's memory (queue, and the encode buffer that keeps a
  // batch's size). 4 MiB is one fdatasync per ~10 ms of a fast disk's bandwidth: larger batches
  // buy no measurable throughput (ferry_bench_physical --load bulk), only memory.
  size_t max_batch_bytes = 4 << 20;
  size_t max_queued_bytes = 16 << 20;
  int zstd_level = 1;                     // 0 = store uncompressed
  // A group commit starts at least this long after the previous one ended, or once a full
  // batch (max_batch_bytes) is queued: under a steady stream, fewer and larger writes and
  // fdatasyncs for up to this much more latency; an idle sink writes at once. 0: no wait.
  // Batcher::SetCommitDelay changes it while the batcher runs.
  absl::Duration commit_delay = absl::ZeroDuration();
  std::shared_ptr<const Keyring> keys;    // seals every frame under keys->current_id(); null: clear
  // Disk-space guard: while it returns true the worker writes nothing, so nothing more is
  // synced or acknowledged; records queue, Append blocks once the queue is full and Drain
  // waits. Polled about every 200 ms; the writing resumes by itself when it turns false.
  // Empty: never held.
  std::function<bool()> hold;
  // A write that fails for lack of space (kResourceExhausted: ENOSPC, EDQUOT) holds the
  // stream like `hold` does and is retried every disk_full_retry until it succeeds; nothing of it
  // is acknowledged meanwhile. Called with that error when the holding starts and with OK when
  // the write succeeds again (for logs). May be empty. Both callbacks run on the thread that
  // writes: the worker, or a producer in EndBurst, which a full disk then holds until the write
  // succeeds or the batcher stops.
  std::function<void(const absl::Status&)> on_disk_full;
  absl::Duration disk_full_retry = absl::Seconds(1);
  // Called after each group commit is synced (the Kafka shipper's wake-up), on the thread that
  // wrote it. Must not block.
  std::function<void()> on_synced;
};

// What a batcher has written, for metrics; read from any thread.
struct BatcherStats {
  // Upper bounds (seconds) of the durable-write latency histogram; a last bucket is +Inf.
  static constexpr double kLatencyBounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1};
  static constexpr size_t kBuckets = sizeof(kLatencyBounds) / sizeof(kLatencyBounds[0]) + 1;
  std::atomic<uint64_t> frames{0};
  std::atomic<uint64_t> raw_bytes{0};     // record bytes before compression
  std::atomic<uint64_t> stored_bytes{0};  // frame bytes written
  std::atomic<uint64_t> writes{0};        // group commits (each one write + fdatasync)
  std::atomic<uint64_t> write_micros{0};  // their total duration
  std::atomic<uint64_t> latency_buckets[kBuckets] = {};  // non-cumulative counts
};

// Thread-safe as a StreamSink for one producer. Owns a worker thread that calls
// consumer->Write; *consumer must outlive the Batcher. Stop() (or the destructor) drains.
class Batcher final : public StreamSink {
 public:
  Batcher(FrameConsumer* consumer, AckPolicy policy, BatcherOptions options);
  ~Batcher() override;

  absl::Status Append(StreamPosition start, Record record) override;
  absl::Status AppendRun(StreamPosition start, std::vector<Record>* records) override;
  absl::Status PutFile(absl::string_view name, absl::string_view contents) override;
  absl::Status Drain() override;
  void BeginBurst() override;
  absl::Status EndBurst() override;
  StreamProgress& progress() override { return progress_; }
  const BatcherStats& stats() const { return stats_; }

  // Declares where the stream already ends durably (the archive's tail) before the first
  // Append: a record of the same epoch that does not start there is reported as a gap.
  void Resume(StreamPosition end);

  // Changes options.commit_delay from the next group commit on (a wait under way ends at once
  // when the new delay is shorter). Any thread.
  void SetCommitDelay(absl::Duration delay);
  absl::Duration commit_delay() override;  // the one in use

  // Drains what is queued, then stops the worker. Returns the sink's error, if any.
  absl::Status Stop();

  // For a service that stops while options.hold (or a full disk) holds the writing: stops the
  // worker without writing what is queued (nothing of it was acknowledged), so that a pending
  // Drain returns kUnavailable instead of waiting for disk space. When not held it does nothing
  // now, but a hold that starts later gives up the same way. Any thread.
  void StopIfHeld();

 private:
  struct Item {
    uint32_t epoch = 0;
    uint64_t start_pos = 0;
    Record record;
    bool is_file = false;  // record.payload holds contents, file_name the name
    std::string file_name;
  };

  // Waits (mu_ held) until the queue takes `bytes` more, then counts them; the sink's error
  // or kCancelled when stopping.
  absl::Status Admit(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();
  // Moves what is queued, up to max_batch_bytes, into *batch and marks the batcher busy.
  void TakeBatch(std::deque<Item>* batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a batch's write, on the thread that wrote it: not busy, and a failure recorded.
  void FinishBatch(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `on_producer`: EndBurst's write, on the thread that waits for its progress.
  absl::Status WriteBatch(std::deque<Item>& batch, bool on_producer);
  // consumer_->Write, retried while the disk is full (see BatcherOptions::on_disk_full).
  absl::Status WriteFrames(const EncodedFrames& frames);

  FrameConsumer* const consumer_;
  const BatcherOptions options_;
  StreamProgress progress_;
  BatcherStats stats_;

  absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::chrono::steady_clock::time_point last_write_end_ ABSL_GUARDED_BY(mu_);  // epoch: never written
  absl::Duration commit_delay_ ABSL_GUARDED_BY(mu_);  // options_.commit_delay, then SetCommitDelay's
  bool delay_changed_ ABSL_GUARDED_BY(mu_) = false;   // SetCommitDelay was called during a wait
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // a batch is being written (by the worker or EndBurst)
  bool burst_ ABSL_GUARDED_BY(mu_) = false;  // between BeginBurst and EndBurst: the worker waits
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool held_ ABSL_GUARDED_BY(mu_) = false;  // options_.hold() said so at the last poll
  bool stop_if_held_ ABSL_GUARDED_BY(mu_) = false;  // StopIfHeld was called
  absl::Status error_ ABSL_GUARDED_BY(mu_);

  // Writing state (set by Resume before the first Append, then only by whichever thread holds
  // busy_: the worker, or the producer in EndBurst): where the stream ends as appended (tail_,
  // for gap checks) and as synced (last_, for epoch changes).
  bool have_tail_ = false;
  uint32_t tail_epoch_ = 0;
  uint64_t tail_end_ = 0;
  bool have_last_ = false;
  uint32_t last_epoch_ = 0;
  uint64_t last_end_ = 0;
  // The worker's encode buffer, kept between group commits: a fresh one would be faulted in
  // page by page for every batch (measured: a third of a 16 MiB group commit's time). It
  // holds up to one batch (max_batch_bytes and the frames' headers) for the stream's life.
  EncodedFrames encoded_;

  std::thread worker_;
};

}  // namespace ferry::pipeline
