// The batcher over a real StreamLog: group commits, what "synced" means, holds and commit_delay.
#include "pipeline/batcher.h"

#include <filesystem>

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

}  // namespace
}  // namespace ferry::pipeline
