// The archive's durability rules under a failing disk, for both writers, through the fault
// injector that sits under them (storage/fault_injection.h): short writes lose nothing, a full
// disk holds the stream and resumes it without a gap or a duplicate, an I/O error stops it
// with nothing acknowledged past the failure, and a failed fdatasync kills the process.
#include <errno.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "pipeline/batcher.h"
#include "pipeline/check.h"
#include "storage/durable_file.h"
#include "storage/fault_injection.h"
#include "storage/stream_log.h"
#include "tests/fixtures/scratch.h"

namespace ferry::storage {
namespace {

using ::ferry::testing::TestDir;
using pipeline::Record;

// A disk that fails as told. Faults apply to operations on paths containing `path_part`.
class FaultyDisk final : public FaultInjector {
 public:
  struct Plan {
    IoOp op = IoOp::kWrite;
    std::string path_part;
    int error = 0;            // errno to return; 0 = none
    double probability = 1;   // chance that a matching call fails (seeded)
    bool short_writes = false;  // kWrite: return at most half of what was written
  };

  explicit FaultyDisk(uint32_t seed) : rng_(seed) { SetFaultInjector(this); }
  ~FaultyDisk() override { SetFaultInjector(nullptr); }

  void Set(const Plan& plan) {
    absl::MutexLock lock(&mu_);
    plan_ = plan;
    active_ = true;
  }
  void Clear() {
    absl::MutexLock lock(&mu_);
    active_ = false;
  }
  int injected() const { return injected_.load(); }

  int64_t OnResult(IoOp op, const std::string& path, int64_t result) override {
    absl::MutexLock lock(&mu_);
    if (!active_ || op != plan_.op || !absl::StrContains(path, plan_.path_part) || result < 0) return result;
    if (std::uniform_real_distribution<double>(0, 1)(rng_) >= plan_.probability) return result;
    if (plan_.short_writes) {
      if (result < 2) return result;
      ++injected_;
      return result / 2;
    }
    ++injected_;
    return -plan_.error;
  }

 private:
  absl::Mutex mu_;
  std::mt19937 rng_ ABSL_GUARDED_BY(mu_);
  Plan plan_ ABSL_GUARDED_BY(mu_);
  bool active_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int> injected_{0};
};

StreamLogOptions Writable(WriterKind kind) {
  StreamLogOptions o;
  o.writer = kind;
  o.segment_bytes = 48 << 10;  // small: batches often span a segment roll
  o.read_only = false;
  return o;
}

// Appends records of random sizes (seeded) at *pos, remembering their bytes in *model. Stops at
// the first Append that fails (the batcher has failed) and returns its error.
absl::Status AppendRecords(pipeline::Batcher* b, int n, uint64_t* pos, std::mt19937* rng, std::string* model) {
  for (int i = 0; i < n; ++i) {
    Record r;
    r.payload.resize(1 + (*rng)() % 4000);
    for (char& c : r.payload) c = static_cast<char>('a' + (*rng)() % 23);
    const uint64_t start = *pos;
    *pos += r.payload.size();
    r.end_pos = *pos;
    model->append(r.payload);
    FERRY_RETURN_IF_ERROR(b->Append({1, start}, std::move(r)));
  }
  return absl::OkStatus();
}

// Reopens the stream read-only: no damage, positions contiguous from 0, the bytes equal *model.
void ExpectArchiveHolds(const std::string& dir, const std::string& model) {
  auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, StreamLogOptions{});
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<Damage> damage;
  (*log)->Verify(&damage);
  for (const Damage& d : damage) ADD_FAILURE() << d.file << " @" << d.offset << ": " << d.reason;
  std::string got;
  std::string scratch;
  for (const FrameLocation& loc : (*log)->frames()) {
    EXPECT_EQ(loc.header.start_pos, got.size()) << "gap or duplicate at frame " << loc.offset;
    auto records = (*log)->ReadRecords(loc, &scratch);
    ASSERT_TRUE(records.ok()) << records.status();
    for (const auto& r : *records) got.append(r.payload.data(), r.payload.size());
  }
  EXPECT_EQ(got.size(), model.size());
  EXPECT_TRUE(got == model) << "archived bytes differ from what was appended";
}

class DiskFaultsTest : public ::testing::TestWithParam<WriterKind> {};

TEST_P(DiskFaultsTest, ShortWritesLoseNothing) {
  const std::string dir = TestDir("short");
  FaultyDisk disk(1);
  std::string model;
  {
    auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, Writable(GetParam()));
    ASSERT_TRUE(log.ok()) << log.status();
    pipeline::Batcher batcher(log->get(), pipeline::AckPolicy::kLocal, {});
    disk.Set({.op = IoOp::kWrite, .path_part = "/", .short_writes = true});
    std::mt19937 rng(7);
    uint64_t pos = 0;
    ASSERT_TRUE(AppendRecords(&batcher, 300, &pos, &rng, &model).ok());
    ASSERT_TRUE(batcher.Drain().ok());
    EXPECT_EQ(batcher.progress().synced(), pos);
    disk.Clear();
  }
  EXPECT_GT(disk.injected(), 10);
  ExpectArchiveHolds(dir, model);
}

// One group commit of about 10 MiB (the batcher held while it queues): both writers write
// batches that large with pwrite, a piece at a time with each piece's write-back started (the
// io_uring writer not through the ring), and short writes there must lose nothing either.
TEST_P(DiskFaultsTest, ShortWritesInALargeGroupCommitLoseNothing) {
  const std::string dir = TestDir("short-large");
  FaultyDisk disk(2);
  std::string model;
  {
    StreamLogOptions o = Writable(GetParam());
    o.segment_bytes = 64 << 20;  // the whole group commit is one write into one segment
    auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, o);
    ASSERT_TRUE(log.ok()) << log.status();
    std::atomic<bool> held{true};
    pipeline::BatcherOptions bo;
    bo.zstd_level = 0;  // the batch stays as large as what was queued
    bo.max_batch_bytes = 16 << 20;
    bo.max_queued_bytes = 64 << 20;
    bo.hold = [&] { return held.load(); };
    pipeline::Batcher batcher(log->get(), pipeline::AckPolicy::kLocal, bo);
    std::mt19937 rng(8);
    uint64_t pos = 0;
    ASSERT_TRUE(AppendRecords(&batcher, 5000, &pos, &rng, &model).ok());
    ASSERT_GT(model.size(), 8u << 20);
    disk.Set({.op = IoOp::kWrite, .path_part = "/", .short_writes = true});
    held = false;
    ASSERT_TRUE(batcher.Drain().ok());
    EXPECT_EQ(batcher.progress().synced(), pos);
    EXPECT_LE(batcher.stats().writes.load(), 2u) << "not one large group commit";
    disk.Clear();
  }
  EXPECT_GT(disk.injected(), 10);
  ExpectArchiveHolds(dir, model);
}

// ENOSPC on a third of all writes (segments, indexes, new segments' headers), seeded: each
// failed write holds the stream, nothing is acknowledged past the last durable frame, and the
// retries leave every byte exactly once.
TEST_P(DiskFaultsTest, FullDiskHoldsAndResumesWithoutGapOrDuplicate) {
  const std::string dir = TestDir("enospc");
  FaultyDisk disk(2);
  std::string model;
  std::atomic<int> full_reports{0};
  std::atomic<int> resumed_reports{0};
  {
    auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, Writable(GetParam()));
    ASSERT_TRUE(log.ok()) << log.status();
    pipeline::BatcherOptions bo;
    bo.disk_full_retry = absl::Milliseconds(5);
    bo.on_disk_full = [&](const absl::Status& st) {
      if (st.ok()) {
        ++resumed_reports;
      } else {
        EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
        EXPECT_TRUE(absl::StrContains(st.message(), dir)) << "the error names the file: " << st;
        ++full_reports;
      }
    };
    pipeline::Batcher batcher(log->get(), pipeline::AckPolicy::kLocal, bo);
    std::mt19937 rng(11);
    uint64_t pos = 0;
    ASSERT_TRUE(AppendRecords(&batcher, 100, &pos, &rng, &model).ok());
    ASSERT_TRUE(batcher.Drain().ok());
    const uint64_t before = batcher.progress().synced();
    ASSERT_EQ(before, pos);

    // A disk that is simply full: nothing more becomes durable or acknowledged.
    disk.Set({.op = IoOp::kWrite, .path_part = dir, .error = ENOSPC});
    ASSERT_TRUE(AppendRecords(&batcher, 50, &pos, &rng, &model).ok());
    while (full_reports.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(batcher.progress().synced(), before) << "acknowledged past a failed write";

    // Space comes and goes.
    disk.Set({.op = IoOp::kWrite, .path_part = dir, .error = ENOSPC, .probability = 0.3});
    // Rounds of appends, each drained, so that there are many writes whatever the batching.
    for (int round = 0; round < 60; ++round) {
      ASSERT_TRUE(AppendRecords(&batcher, 10, &pos, &rng, &model).ok());
      ASSERT_TRUE(batcher.Drain().ok());
    }
    disk.Clear();
    ASSERT_TRUE(batcher.Drain().ok());
    EXPECT_EQ(batcher.progress().synced(), pos);
  }
  EXPECT_GT(disk.injected(), 5);
  EXPECT_GT(full_reports.load(), 5);
  EXPECT_EQ(resumed_reports.load(), full_reports.load());
  ExpectArchiveHolds(dir, model);
}

// EIO on a write is not retried: the stream stops with an error naming the file, the
// acknowledged position stays where the archive ends, and the archive reopens clean.
TEST_P(DiskFaultsTest, WriteErrorStopsTheStreamWithNothingAcknowledged) {
  const std::string dir = TestDir("eio");
  FaultyDisk disk(3);
  std::string model;
  {
    auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, Writable(GetParam()));
    ASSERT_TRUE(log.ok()) << log.status();
    pipeline::Batcher batcher(log->get(), pipeline::AckPolicy::kLocal, {});
    std::mt19937 rng(5);
    uint64_t pos = 0;
    ASSERT_TRUE(AppendRecords(&batcher, 80, &pos, &rng, &model).ok());
    ASSERT_TRUE(batcher.Drain().ok());
    const uint64_t durable = batcher.progress().synced();

    disk.Set({.op = IoOp::kWrite, .path_part = ".seg", .error = EIO});
    std::string lost;
    uint64_t lost_pos = pos;
    (void)AppendRecords(&batcher, 20, &lost_pos, &rng, &lost);  // fails once the write has failed
    absl::Status st = batcher.Drain();
    EXPECT_TRUE(absl::IsDataLoss(st)) << st;
    EXPECT_TRUE(absl::StrContains(st.message(), "Input/output error")) << st;
    EXPECT_EQ(batcher.progress().synced(), durable);
    EXPECT_EQ(batcher.progress().Acked(), durable);
    disk.Clear();
  }
  ExpectArchiveHolds(dir, model);
  // And it takes writes again after a restart.
  auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, Writable(GetParam()));
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->frames().back().header.end_pos, model.size());
}

// PostgreSQL's fsync lesson: after a failed fdatasync the kernel may have dropped the dirty
// pages, so a retry that succeeds proves nothing. The process dies with a line naming the file.
TEST_P(DiskFaultsTest, FailedFdatasyncIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string dir = TestDir("fsync");
  const WriterKind kind = GetParam();
  EXPECT_DEATH(
      {
        FaultyDisk disk(4);
        auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, Writable(kind));
        if (!log.ok()) std::exit(3);
        pipeline::Batcher batcher(log->get(), pipeline::AckPolicy::kLocal, {});
        std::mt19937 rng(9);
        std::string model;
        uint64_t pos = 0;
        if (!AppendRecords(&batcher, 5, &pos, &rng, &model).ok() || !batcher.Drain().ok()) std::exit(4);
        disk.Set({.op = IoOp::kSync, .path_part = ".seg", .error = EIO});
        (void)AppendRecords(&batcher, 5, &pos, &rng, &model);
        (void)batcher.Drain();
        std::exit(5);  // not reached: the fdatasync failure aborts
      },
      "fatal: fdatasync .*\\.seg: Input/output error; aborting so that nothing unsynced is acknowledged");
}

INSTANTIATE_TEST_SUITE_P(Writers, DiskFaultsTest, ::testing::Values(WriterKind::kPosix, WriterKind::kIoUring),
                         [](const auto& info) { return std::string(WriterKindName(info.param)) == "posix" ? "Posix" : "IoUring"; });

}  // namespace
}  // namespace ferry::storage
