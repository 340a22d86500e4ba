#include "pipeline/batcher.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"

namespace ferry::pipeline {
namespace {

// What a queued record counts for beyond its payload in the queue's byte accounting
// (max_queued_bytes, max_batch_bytes): roughly the fixed memory of a queued item (positions,
// timestamp, string headers, its deque slot), so that a stream of tiny records is bounded too.
constexpr size_t kQueuedRecordOverhead = 64;

}  // namespace

Batcher::Batcher(FrameConsumer* consumer, AckPolicy policy, BatcherOptions options)
    : consumer_(consumer), options_(options), progress_(policy), commit_delay_(options.commit_delay) {
  worker_ = std::thread([this] { Run(); });
}

Batcher::~Batcher() { (void)Stop(); }

absl::Status Batcher::Admit(size_t bytes) {
  // Back-pressure: wait for room, but always admit into an empty queue so that one record (or
  // run) larger than the limit cannot deadlock. A burst that fills the queue is handed to the
  // worker: the producer cannot write it while it waits here.
  if (queued_bytes_ >= options_.max_queued_bytes) burst_ = false;
  mu_.Await(absl::Condition(
      +[](Batcher* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
        return !b->error_.ok() || b->stopping_ ||
               b->queued_bytes_ < b->options_.max_queued_bytes || b->queue_.empty();
      },
      this));
  if (!error_.ok()) return error_;
  if (stopping_) return absl::CancelledError("stream sink is stopping");
  queued_bytes_ += bytes;
  // A burst as large as a batch is the worker's to write from now on, while the producer
  // reads on: receiving and writing overlap again when the stream is fast.
  if (queued_bytes_ >= options_.max_batch_bytes) burst_ = false;
  return absl::OkStatus();
}

absl::Status Batcher::Append(StreamPosition start, Record record) {
  const size_t bytes = record.payload.size() + kQueuedRecordOverhead;
  const uint64_t end = record.end_pos;
  absl::MutexLock lock(&mu_);
  FERRY_RETURN_IF_ERROR(Admit(bytes));
  queue_.push_back(Item{start.epoch, start.offset, std::move(record), false, {}});
  progress_.SetReceived(end);
  return absl::OkStatus();
}

absl::Status Batcher::AppendRun(StreamPosition start, std::vector<Record>* records) {
  if (records->empty()) return absl::OkStatus();
  size_t bytes = 0;
  for (const Record& r : *records) bytes += r.payload.size() + kQueuedRecordOverhead;
  absl::MutexLock lock(&mu_);
  FERRY_RETURN_IF_ERROR(Admit(bytes));  // once for the run: one lock, at most one wake-up
  uint64_t start_pos = start.offset;
  for (Record& r : *records) {
    const uint64_t end = r.end_pos;
    queue_.push_back(Item{start.epoch, start_pos, std::move(r), false, {}});
    start_pos = end;
  }
  progress_.SetReceived(start_pos);
  records->clear();
  return absl::OkStatus();
}

void Batcher::Resume(StreamPosition end) {
  absl::MutexLock lock(&mu_);
  have_tail_ = have_last_ = true;
  tail_epoch_ = last_epoch_ = end.epoch;
  tail_end_ = last_end_ = end.offset;
  progress_.Reset(end.offset);
}

absl::Status Batcher::PutFile(absl::string_view name, absl::string_view contents) {
  absl::MutexLock lock(&mu_);
  if (!error_.ok()) return error_;
  Item item;
  item.is_file = true;
  item.file_name = std::string(name);
  item.record.payload = std::string(contents);
  queue_.push_back(std::move(item));
  return absl::OkStatus();
}

absl::Status Batcher::Drain() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](Batcher* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
        return !b->error_.ok() || (b->queue_.empty() && !b->busy_) || (b->held_ && b->stopping_);
      },
      this));
  if (error_.ok() && (!queue_.empty() || busy_)) {
    return absl::UnavailableError(
        "stopped while the archive's file system was full or nearly full: what was queued is not acknowledged "
        "(the source sends it again after a restart)");
  }
  return error_;
}

void Batcher::SetCommitDelay(absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  commit_delay_ = delay;
  delay_changed_ = true;
}

absl::Duration Batcher::commit_delay() {
  absl::MutexLock lock(&mu_);
  return commit_delay_;
}

void Batcher::StopIfHeld() {
  absl::MutexLock lock(&mu_);
  // Sticky: a hold that starts after this call (the next poll, a write failing with ENOSPC)
  // gives up too, instead of waiting for space while the service waits to stop.
  stop_if_held_ = true;
  if (held_) stopping_ = true;
}

absl::Status Batcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (worker_.joinable()) worker_.join();
  absl::MutexLock lock(&mu_);
  return error_;
}

void Batcher::BeginBurst() {
  absl::MutexLock lock(&mu_);
  // Only an immediate sink writes on the producer's thread: one that waits between commits
  // gathers them on the worker, and a held one (disk space) waits there too.
  burst_ = commit_delay_ == absl::ZeroDuration() && !held_;
}

absl::Status Batcher::EndBurst() {
  std::deque<Item> batch;
  {
    absl::MutexLock lock(&mu_);
    const bool mine = burst_;
    burst_ = false;
    if (!error_.ok()) return error_;
    // Under way (busy_): the worker takes this burst with whatever follows once it is done.
    if (!mine || busy_ || stopping_ || queue_.empty()) return absl::OkStatus();
    if (options_.hold && (held_ = options_.hold())) return absl::OkStatus();  // the worker waits for space
    TakeBatch(&batch);
  }
  absl::Status status = WriteBatch(batch, /*on_producer=*/true);
  absl::MutexLock lock(&mu_);
  FinishBatch(status);
  return status;
}

void Batcher::TakeBatch(std::deque<Item>* batch) {
  // Everything that queued while the last batch was syncing, up to the batch limit: that is
  // the group commit.
  size_t taken = 0;
  while (!queue_.empty() && (batch->empty() || taken < options_.max_batch_bytes)) {
    taken += queue_.front().record.payload.size() + kQueuedRecordOverhead;
    batch->push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  queued_bytes_ -= std::min(queued_bytes_, taken);
  busy_ = true;
}

void Batcher::FinishBatch(const absl::Status& status) {
  last_write_end_ = std::chrono::steady_clock::now();
  busy_ = false;
  if (!status.ok() && error_.ok()) {
    error_ = status;
    queue_.clear();
    progress_.Notify();
  }
}

void Batcher::Run() {
  std::deque<Item> batch;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      // A burst is the producer's to write (EndBurst) unless the batcher is stopping; a batch
      // under way (EndBurst's) is waited for.
      mu_.Await(absl::Condition(
          +[](Batcher* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
            return !b->busy_ && ((!b->queue_.empty() && !b->burst_) || b->stopping_ || !b->error_.ok());
          },
          this));
      if (!error_.ok()) return;  // a write on the producer's thread failed
      if (queue_.empty()) return;  // stopping and drained
      // Gathers a larger group commit. A full batch or stopping ends the wait, so the delay
      // never caps throughput; a new delay (SetCommitDelay) is taken into account at once.
      // The steady clock: a wall clock stepped back would stretch the wait.
      while (!stopping_ && queued_bytes_ < options_.max_batch_bytes && commit_delay_ > absl::ZeroDuration()) {
        const auto ready = last_write_end_ + absl::ToChronoNanoseconds(commit_delay_);
        const auto now = std::chrono::steady_clock::now();
        if (now >= ready) break;
        delay_changed_ = false;
        mu_.AwaitWithTimeout(absl::Condition(
                                 +[](Batcher* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
                                   return b->stopping_ || b->delay_changed_ ||
                                          b->queued_bytes_ >= b->options_.max_batch_bytes;
                                 },
                                 this),
                             absl::FromChrono(ready - now));
      }
      // The producer may have started and written a burst while the delay was waited out.
      if (busy_ || (burst_ && !stopping_) || queue_.empty()) continue;
      if (options_.hold) {
        held_ = options_.hold();
        if (held_) {
          // Nothing queued was acknowledged: on stop it is dropped, and re-sent by the
          // source after a restart, rather than written into a full disk.
          if (stop_if_held_) stopping_ = true;
          if (stopping_) return;
          mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(200));
          continue;
        }
      }
      TakeBatch(&batch);
    }
    absl::Status status = WriteBatch(batch, /*on_producer=*/false);
    batch.clear();
    absl::MutexLock lock(&mu_);
    FinishBatch(status);
    if (!status.ok()) return;
  }
}

absl::Status Batcher::WriteBatch(std::deque<Item>& batch, bool on_producer) {
  EncodedFrames& frames = encoded_;
  frames.bytes.clear();
  frames.headers.clear();
  std::vector<Record> pending;
  uint32_t pending_epoch = 0;
  uint64_t pending_start = 0;
  size_t pending_bytes = 0;

  auto close_frame = [&]() -> absl::Status {
    if (pending.empty()) return absl::OkStatus();
    FrameInput input{pending_epoch, pending_start, NowUnixMicros(), pending};
    FERRY_ASSIGN_OR_RETURN(FrameHeader h, EncodeFrame(input, options_.zstd_level, &frames.bytes, options_.keys.get()));
    frames.headers.push_back(h);
    pending.clear();
    pending_bytes = 0;
    return absl::OkStatus();
  };
  // Frames go to the consumer before any side file that was queued after them, and each
  // epoch change is a frame boundary.
  auto flush = [&]() -> absl::Status {
    FERRY_RETURN_IF_ERROR(close_frame());
    if (frames.headers.empty()) return absl::OkStatus();
    const auto t0 = std::chrono::steady_clock::now();
    FERRY_RETURN_IF_ERROR(WriteFrames(frames));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    size_t bucket = 0;
    while (bucket + 1 < BatcherStats::kBuckets && seconds > BatcherStats::kLatencyBounds[bucket]) ++bucket;
    stats_.latency_buckets[bucket].fetch_add(1, std::memory_order_relaxed);
    stats_.writes.fetch_add(1, std::memory_order_relaxed);
    stats_.write_micros.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
    stats_.frames.fetch_add(frames.headers.size(), std::memory_order_relaxed);
    stats_.stored_bytes.fetch_add(frames.bytes.size(), std::memory_order_relaxed);
    for (const FrameHeader& h : frames.headers) {
      stats_.raw_bytes.fetch_add(h.raw_len, std::memory_order_relaxed);
      if (!have_last_ || h.epoch != last_epoch_) {
        // A new epoch (timeline) may restart below the old one's end: the acknowledged
        // position follows the new epoch, never the dead branch.
        progress_.Reset(h.start_pos);
      }
      have_last_ = true;
      last_epoch_ = h.epoch;
      last_end_ = h.end_pos;
    }
    progress_.SetWritten(last_end_);
    progress_.SetSynced(last_end_, /*wake=*/!on_producer);
    if (options_.on_synced) options_.on_synced();
    frames.bytes.clear();
    frames.headers.clear();
    return absl::OkStatus();
  };

  for (Item& item : batch) {
    if (item.is_file) {
      FERRY_RETURN_IF_ERROR(flush());
      FERRY_RETURN_IF_ERROR(consumer_->PutFile(item.file_name, item.record.payload));
      continue;
    }
    if (have_tail_ && item.epoch == tail_epoch_ && item.start_pos != tail_end_) {
      return absl::DataLossError(absl::StrCat("stream gap in epoch ", item.epoch,
                                              ": record starts at ", item.start_pos,
                                              " but the stream ends at ", tail_end_));
    }
    if (!pending.empty() && item.epoch != pending_epoch) FERRY_RETURN_IF_ERROR(close_frame());
    if (pending.empty()) {
      pending_epoch = item.epoch;
      pending_start = item.start_pos;
    }
    have_tail_ = true;
    tail_epoch_ = item.epoch;
    tail_end_ = item.record.end_pos;
    pending_bytes += item.record.payload.size();
    pending.push_back(std::move(item.record));
    if (pending_bytes >= options_.max_frame_raw_bytes) FERRY_RETURN_IF_ERROR(close_frame());
  }
  return flush();
}

absl::Status Batcher::WriteFrames(const EncodedFrames& frames) {
  size_t durable = 0;
  absl::Status st = consumer_->Write(frames, &durable);
  if (!absl::IsResourceExhausted(st)) return st;
  if (options_.on_disk_full) options_.on_disk_full(st);
  // What is still to write: the frames after those the failed call made durable anyway.
  EncodedFrames rest;
  size_t from = 0;
  auto drop_durable = [&](const EncodedFrames& src) {
    size_t bytes = 0;
    for (size_t i = 0; i < durable; ++i) bytes += src.headers[i].frame_size();
    EncodedFrames left;
    left.bytes = src.bytes.substr(bytes);
    left.headers.assign(src.headers.begin() + static_cast<ptrdiff_t>(durable), src.headers.end());
    from += durable;
    rest = std::move(left);
  };
  drop_durable(frames);
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      held_ = true;
      if (stop_if_held_) stopping_ = true;
      if (!stopping_) mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.disk_full_retry);
      if (stopping_) {
        return absl::UnavailableError(absl::StrCat(
            "stopped while the archive's file system was full: ", frames.headers.size() - from,
            " frame(s) not written and not acknowledged"));
      }
    }
    st = consumer_->Write(rest, &durable);
    if (!absl::IsResourceExhausted(st)) break;
    drop_durable(rest);
  }
  {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }
  if (st.ok() && options_.on_disk_full) options_.on_disk_full(st);
  return st;
}

}  // namespace ferry::pipeline
