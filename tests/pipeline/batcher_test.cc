// The batcher over a real StreamLog: group commits, what "synced" means, holds and commit_delay.
#include "pipeline/batcher.h"

#include <poll.h>

#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "storage/stream_log.h"
#include "tests/fixtures/scratch.h"

namespace ferry::pipeline {
namespace {

using ::ferry::testing::TestDir;
using storage::StreamLog;
using storage::StreamLogOptions;
using storage::WriterKind;

StreamLogOptions Writable() {
  StreamLogOptions o;
  o.writer = WriterKind::kPosix;
  o.read_only = false;
  return o;
}

// The batcher over a real StreamLog: synced follows what is durable, gaps are refused.
TEST(BatcherTest, SyncedFollowsDurableFramesAndGapsAreRefused) {
  const std::string dir = TestDir("ferry-test");
  auto log = StreamLog::Open(dir, StreamKind::kPgWal, Writable());
  ASSERT_TRUE(log.ok());
  Batcher batcher(log->get(), AckPolicy::kLocal, {});
  batcher.Resume({1, 100});
  EXPECT_EQ(batcher.progress().Acked(), 100u);
  uint64_t pos = 100;
  for (int i = 0; i < 50; ++i) {
    Record r;
    r.payload = std::string(1000, 'x');
    r.end_pos = pos + 1000;
    ASSERT_TRUE(batcher.Append({1, pos}, std::move(r)).ok());
    pos += 1000;
  }
  ASSERT_TRUE(batcher.Drain().ok());
  EXPECT_EQ(batcher.progress().synced(), pos);
  EXPECT_EQ((*log)->frames().back().header.end_pos, pos);
  Record gap;
  gap.payload = "y";
  gap.end_pos = pos + 11;
  ASSERT_TRUE(batcher.Append({1, pos + 10}, std::move(gap)).ok());
  absl::Status st = batcher.Drain();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_EQ(batcher.progress().synced(), pos);  // nothing past the gap acknowledged
  std::filesystem::remove_all(dir);
}

// The disk-space guard: while held, nothing is written, synced or acknowledged; released,
// everything queued is written in order; stopped while held, Drain says why.
TEST(BatcherTest, HoldWritesNothingUntilReleased) {
  const std::string dir = TestDir("ferry-test");
  auto log = StreamLog::Open(dir, StreamKind::kPgWal, Writable());
  ASSERT_TRUE(log.ok());
  std::atomic<bool> hold{true};
  BatcherOptions options;
  options.hold = [&hold] { return hold.load(); };
  Batcher batcher(log->get(), AckPolicy::kLocal, options);
  batcher.Resume({1, 100});
  uint64_t pos = 100;
  for (int i = 0; i < 10; ++i) {
    Record r;
    r.payload = std::string(100, 'x');
    r.end_pos = pos + 100;
    ASSERT_TRUE(batcher.Append({1, pos}, std::move(r)).ok());
    pos += 100;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(batcher.progress().Acked(), 100u);
  EXPECT_TRUE((*log)->empty());
  hold = false;  // space returns: a Drain waiting meanwhile completes
  ASSERT_TRUE(batcher.Drain().ok());
  EXPECT_EQ(batcher.progress().Acked(), pos);
  EXPECT_EQ((*log)->frames().back().header.end_pos, pos);

  // Stopped while held: the waiting Drain says why, and nothing of the held record is written.
  hold = true;
  Record r;
  r.payload = "z";
  r.end_pos = pos + 1;
  ASSERT_TRUE(batcher.Append({1, pos}, std::move(r)).ok());
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    batcher.StopIfHeld();
  });
  EXPECT_EQ(batcher.Drain().code(), absl::StatusCode::kUnavailable);
  stopper.join();
  EXPECT_EQ((*log)->frames().back().header.end_pos, pos);
  EXPECT_EQ(batcher.progress().Acked(), pos);
  std::filesystem::remove_all(dir);
}

// commit_delay: an idle sink writes at once; a record right after a write waits for the
// delay (here far longer than the test) and for nothing else, a shorter delay set meanwhile
// ends the wait, and AppendRun queues a run as one hand-over of contiguous records.
TEST(BatcherTest, CommitDelaySpacesGroupCommitsButNotTheFirst) {
  const std::string dir = TestDir("ferry-test");
  auto log = StreamLog::Open(dir, StreamKind::kPgWal, Writable());
  ASSERT_TRUE(log.ok());
  BatcherOptions options;
  options.commit_delay = absl::Seconds(60);
  Batcher batcher(log->get(), AckPolicy::kLocal, options);
  batcher.Resume({1, 0});
  std::vector<Record> run(3);
  for (size_t i = 0; i < run.size(); ++i) {
    run[i].payload = std::string(10, static_cast<char>('a' + i));
    run[i].end_pos = 10 * (i + 1);
  }
  ASSERT_TRUE(batcher.AppendRun({1, 0}, &run).ok());
  EXPECT_TRUE(run.empty());
  ASSERT_TRUE(batcher.Drain().ok());  // idle: written at once, not 60 s later
  EXPECT_EQ(batcher.progress().Acked(), 30u);

  Record r;
  r.payload = "next";
  r.end_pos = 34;
  ASSERT_TRUE(batcher.Append({1, 30}, std::move(r)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(batcher.progress().Acked(), 30u) << "written before its commit_delay";
  // What `commit_delay = "auto"` does once the primary names ferry a synchronous standby: the
  // wait under way ends then, not 60 s after the last write.
  batcher.SetCommitDelay(absl::ZeroDuration());
  for (int i = 0; i < 100 && batcher.progress().Acked() < 34u; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(batcher.progress().Acked(), 34u) << "still waiting out the old commit_delay";

  batcher.SetCommitDelay(absl::Seconds(60));
  r.payload = "more";
  r.end_pos = 38;
  ASSERT_TRUE(batcher.Append({1, 34}, std::move(r)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(batcher.progress().Acked(), 34u) << "written before its commit_delay";
  ASSERT_TRUE(batcher.Stop().ok());  // stopping cuts the wait short and writes it
  EXPECT_EQ((*log)->frames().back().header.end_pos, 38u);
  std::filesystem::remove_all(dir);
}

// A FrameConsumer over a StreamLog that records which thread wrote each batch and can hold a
// write (the worker's) until released.
class ThreadRecordingConsumer final : public FrameConsumer {
 public:
  explicit ThreadRecordingConsumer(StreamLog* log) : log_(log) {}
  absl::Status Write(const EncodedFrames& frames, size_t* durable) override {
    absl::MutexLock lock(&mu_);
    writers_.push_back(std::this_thread::get_id());
    ++writing_;
    mu_.Await(absl::Condition(+[](bool* held) { return !*held; }, &held_));
    return log_->Write(frames, durable);
  }
  absl::Status PutFile(absl::string_view name, absl::string_view contents) override {
    return log_->PutFile(name, contents);
  }
  void Hold(bool held) {
    absl::MutexLock lock(&mu_);
    held_ = held;
  }
  void AwaitWriting(int n) {
    absl::MutexLock lock(&mu_);
    std::pair<int*, int> want(&writing_, n);
    mu_.Await(absl::Condition(+[](std::pair<int*, int>* w) { return *w->first >= w->second; }, &want));
  }
  std::vector<std::thread::id> writers() {
    absl::MutexLock lock(&mu_);
    return writers_;
  }

 private:
  StreamLog* const log_;
  absl::Mutex mu_;
  bool held_ = false;
  int writing_ = 0;
  std::vector<std::thread::id> writers_;
};

// A batcher over a ThreadRecordingConsumer over a StreamLog in a scratch directory.
struct BurstRig {
  explicit BurstRig(BatcherOptions options = {})
      : dir(TestDir("ferry-test")),
        log(std::move(*StreamLog::Open(dir, StreamKind::kPgWal, Writable()))),
        consumer(log.get()),
        batcher(&consumer, AckPolicy::kLocal, options) {
    batcher.Resume({1, 0});
  }
  ~BurstRig() {
    (void)batcher.Stop();
    std::filesystem::remove_all(dir);
  }
  std::string dir;
  std::unique_ptr<StreamLog> log;
  ThreadRecordingConsumer consumer;
  Batcher batcher;
};

absl::Status AppendBytes(Batcher* batcher, uint64_t* pos, size_t n) {
  Record r;
  r.payload = std::string(n, 'w');
  r.end_pos = *pos + n;
  absl::Status st = batcher->Append({1, *pos}, std::move(r));
  *pos += n;
  return st;
}

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

// A burst (what a source read in one wake-up) on an idle batcher is written and synced on the
// caller's thread, with no wake-up of the worker or of the caller's own notify fd.
TEST(BatcherBurstTest, AnIdleBatcherWritesTheBurstOnTheCallersThread) {
  BurstRig rig;
  Batcher& batcher = rig.batcher;
  ThreadRecordingConsumer& consumer = rig.consumer;
  uint64_t pos = 0;
  for (int round = 0; round < 3; ++round) {
    batcher.BeginBurst();
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(AppendBytes(&batcher, &pos, 100).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_LT(batcher.progress().synced(), pos) << "the worker took a burst that was the caller's";
    ASSERT_TRUE(batcher.EndBurst().ok());
    EXPECT_EQ(batcher.progress().synced(), pos) << "EndBurst returned before its burst was durable";
    EXPECT_FALSE(Readable(batcher.progress().notify_fd())) << "the caller woke itself";
  }
  for (std::thread::id id : consumer.writers()) EXPECT_EQ(id, std::this_thread::get_id());
  EXPECT_EQ(consumer.writers().size(), 3u);
  ASSERT_TRUE(batcher.Stop().ok());
  EXPECT_EQ(rig.log->frames().back().header.end_pos, pos);
}

// While a group commit is under way on the worker, a burst is left to it (EndBurst returns at
// once, nothing synced yet), and the worker writes it next.
TEST(BatcherBurstTest, ABurstDuringTheWorkersCommitIsLeftToTheWorker) {
  BurstRig rig;
  Batcher& batcher = rig.batcher;
  ThreadRecordingConsumer& consumer = rig.consumer;
  uint64_t pos = 0;
  consumer.Hold(true);
  ASSERT_TRUE(AppendBytes(&batcher, &pos, 100).ok());  // no burst: the worker's
  consumer.AwaitWriting(1);
  batcher.BeginBurst();
  ASSERT_TRUE(AppendBytes(&batcher, &pos, 100).ok());
  ASSERT_TRUE(batcher.EndBurst().ok());
  EXPECT_EQ(batcher.progress().synced(), 0u);
  consumer.Hold(false);
  ASSERT_TRUE(batcher.Drain().ok());
  EXPECT_EQ(batcher.progress().synced(), pos);
  ASSERT_EQ(consumer.writers().size(), 2u);
  for (std::thread::id id : consumer.writers()) EXPECT_NE(id, std::this_thread::get_id());
}

// A burst as large as a batch is handed to the worker, which writes while the caller appends on
// (and a burst past the queue's limit cannot wait for room it would make itself). A batcher that
// waits between commits (commit_delay) never writes on the caller's thread.
TEST(BatcherBurstTest, AFullQueueOrACommitDelayHandsTheBurstToTheWorker) {
  for (const bool delay : {false, true}) {
    BatcherOptions options;
    options.max_queued_bytes = 16 << 10;
    options.max_batch_bytes = 4 << 10;
    if (delay) options.commit_delay = absl::Milliseconds(1);
    BurstRig rig(options);
    Batcher& batcher = rig.batcher;
    ThreadRecordingConsumer& consumer = rig.consumer;
    uint64_t pos = 0;
    batcher.BeginBurst();
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(AppendBytes(&batcher, &pos, 1000).ok());  // 10 KB > a 4 KiB batch
    for (int i = 0; i < 500 && consumer.writers().empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_FALSE(consumer.writers().empty()) << "a burst of a batch's size waited for EndBurst";
    for (int i = 0; i < 90; ++i) ASSERT_TRUE(AppendBytes(&batcher, &pos, 1000).ok());  // 100 KB > the 16 KiB queue
    ASSERT_TRUE(batcher.EndBurst().ok());
    ASSERT_TRUE(batcher.Drain().ok());
    EXPECT_EQ(batcher.progress().synced(), pos);
    ASSERT_FALSE(consumer.writers().empty());
    EXPECT_NE(consumer.writers().front(), std::this_thread::get_id()) << "delay " << delay;
    if (delay) {
      for (std::thread::id id : consumer.writers()) EXPECT_NE(id, std::this_thread::get_id());
    }
  }
}

}  // namespace
}  // namespace ferry::pipeline
