// wal-fetch decompress-ahead: what the prefetcher spools is exactly what a direct fetch
// serves, it stays inside its window, never caches the archive's growing last segment, and
// stops by itself.
#include "restore/wal_prefetch.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "client/pg/replication_conn.h"
#include "restore/wal_fetch.h"
#include "storage/durable_file.h"
#include "tests/fixtures/scratch.h"

namespace ferry::restore {
namespace {

using ::ferry::testing::TestDir;

constexpr uint64_t kSeg = 1 << 20;  // PostgreSQL's smallest WAL segment size

std::string Name(uint64_t segno) { return client::pg::WalFileName(pipeline::TimelineId(1), segno, kSeg); }

// An archive whose source "main" holds WAL on timeline 1 over each range [from, to) of
// `ranges`, in frames of 64 KiB records; returns the WAL itself.
std::string MakeArchiveWith(const std::string& dir, const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  storage::ArchiveOptions opts;
  opts.writable = true;
  opts.writer = storage::WriterKind::kPosix;
  auto archive = storage::Archive::Open(dir, opts);
  EXPECT_TRUE(archive.ok()) << archive.status();
  EXPECT_TRUE((*archive)->SetIdentity("main", {{"wal_segment_size", std::to_string(kSeg)}}).ok());
  auto log = (*archive)->Stream("main", pipeline::StreamKind::kPgWal);
  EXPECT_TRUE(log.ok()) << log.status();
  std::mt19937 rng(3);
  std::string wal;
  for (const auto& [from, to] : ranges) {
    uint64_t pos = from;
    while (pos < to) {
      std::vector<pipeline::Record> records(1);
      records[0].payload.resize(std::min<uint64_t>(64 << 10, to - pos));
      for (char& c : records[0].payload) c = static_cast<char>(rng() % 13);
      const uint64_t start = pos;
      pos += records[0].payload.size();
      records[0].end_pos = pos;
      wal += records[0].payload;
      pipeline::EncodedFrames frames;
      auto h = pipeline::EncodeFrame({1, start, 0, records}, 1, &frames.bytes);
      EXPECT_TRUE(h.ok());
      frames.headers.push_back(*h);
      EXPECT_TRUE((*log)->Write(frames).ok());
    }
  }
  return wal;
}

// An archive holding `bytes` of WAL from position 0.
std::string MakeArchive(const std::string& dir, uint64_t bytes) { return MakeArchiveWith(dir, {{0, bytes}}); }

std::unique_ptr<storage::Archive> OpenReadOnly(const std::string& dir) {
  auto archive = storage::Archive::Open(dir, storage::ArchiveOptions{});
  EXPECT_TRUE(archive.ok()) << archive.status();
  return std::move(*archive);
}

bool LockHeld(const std::string& spool) {
  const int fd = open((spool + "/LOCK").c_str(), O_RDONLY);
  if (fd < 0) return false;
  const bool held = flock(fd, LOCK_SH | LOCK_NB) != 0;
  close(fd);
  return held;
}

std::string Read(const std::string& path) {
  auto s = storage::ReadWholeFile(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

// The archive holds segments 0..4 complete and segment 5 half (the growing last one).
class WalPrefetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir("ferry-prefetch-test");
    wal_ = MakeArchive(dir_ + "/archive", 5 * kSeg + kSeg / 2);
    archive_ = OpenReadOnly(dir_ + "/archive");
    std::filesystem::create_directories(dir_ + "/pg_wal");
    spool_ = dir_ + "/pg_wal/.ferry-prefetch";
  }
  void TearDown() override {
    // A detached prefetcher may still be filling the spool: let it go away (idle_exit) before
    // the directory is removed under it.
    for (int i = 0; i < 250 && std::filesystem::exists(spool_) && LockHeld(spool_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    archive_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    EXPECT_FALSE(ec) << dir_ << ": " << ec.message();
  }
  std::string Segment(uint64_t segno) const { return wal_.substr(segno * kSeg, kSeg); }

  std::string dir_, wal_, spool_;
  std::unique_ptr<storage::Archive> archive_;
};

TEST_F(WalPrefetchTest, SpoolsTheWindowAheadAndServesItByRename) {
  WalPrefetchOptions options;
  options.depth = 2;
  options.idle_exit = absl::Milliseconds(300);
  const std::string dest = dir_ + "/pg_wal/RECOVERYXLOG";
  EXPECT_EQ(DefaultSpool(dest), spool_);

  ASSERT_TRUE(FetchWalFileAhead(*archive_, "main", Name(0), dest, options).ok());
  EXPECT_EQ(Read(dest), Segment(0));
  // The detached prefetcher fills the window (segments 1 and 2), no further.
  for (int i = 0; i < 100 && !std::filesystem::exists(spool_ + "/" + Name(2)); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(std::filesystem::exists(spool_ + "/" + Name(1)));
  ASSERT_TRUE(std::filesystem::exists(spool_ + "/" + Name(2)));
  EXPECT_EQ(Read(spool_ + "/" + Name(2)), Segment(2));
  EXPECT_FALSE(std::filesystem::exists(spool_ + "/" + Name(3)));

  // The next fetch takes segment 1 from the spool (it leaves it) and moves the window on.
  ASSERT_TRUE(FetchWalFileAhead(*archive_, "main", Name(1), dest, options).ok());
  EXPECT_EQ(Read(dest), Segment(1));
  EXPECT_FALSE(std::filesystem::exists(spool_ + "/" + Name(1)));
  for (int i = 0; i < 100 && !std::filesystem::exists(spool_ + "/" + Name(3)); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Read(spool_ + "/" + Name(3)), Segment(3));

  // With no further request the prefetcher goes away by itself.
  for (int i = 0; i < 100 && LockHeld(spool_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(LockHeld(spool_));
}

TEST_F(WalPrefetchTest, NeverSpoolsTheGrowingLastSegmentAndDropsTheSpoolAtTheEnd) {
  WalPrefetchOptions options;
  options.depth = 8;
  options.idle_exit = absl::Milliseconds(300);
  std::filesystem::create_directories(spool_);
  ASSERT_TRUE(storage::WriteFileAtomically(spool_, "REQUESTED", Name(2)).ok());
  // Run in this process: it returns at the end of the complete segments.
  RunWalPrefetcher(*archive_, "main", spool_, options);
  EXPECT_EQ(Read(spool_ + "/" + Name(3)), Segment(3));
  EXPECT_EQ(Read(spool_ + "/" + Name(4)), Segment(4));
  EXPECT_FALSE(std::filesystem::exists(spool_ + "/" + Name(5)));

  // The last segment is served zero-padded by a direct fetch, never from the spool.
  const std::string dest = dir_ + "/pg_wal/RECOVERYXLOG";
  ASSERT_TRUE(FetchWalFileAhead(*archive_, "main", Name(5), dest, options).ok());
  std::string expected = wal_.substr(5 * kSeg);
  expected.resize(kSeg, '\0');
  EXPECT_EQ(Read(dest), expected);
  // Asking past the end is "not found", and recovery is over: the spool goes.
  EXPECT_TRUE(absl::IsNotFound(FetchWalFileAhead(*archive_, "main", Name(6), dest, options)));
  EXPECT_FALSE(std::filesystem::exists(spool_));
}

// Spooled segments are not fsynced: after an OS restart they may be torn, so a spool
// started under another boot id is emptied, never served.
TEST_F(WalPrefetchTest, SpoolFromBeforeAnOsRestartIsNeverServed) {
  WalPrefetchOptions options;
  options.depth = 1;
  options.idle_exit = absl::Milliseconds(100);
  std::filesystem::create_directories(spool_);
  ASSERT_TRUE(storage::WriteFileAtomically(spool_, "BOOT", "a-boot-long-ago\n").ok());
  ASSERT_TRUE(storage::WriteFileAtomically(spool_, "REQUESTED", Name(0)).ok());
  ASSERT_TRUE(storage::WriteFileAtomically(spool_, Name(1), std::string(kSeg, 'x')).ok());
  const std::string dest = dir_ + "/pg_wal/RECOVERYXLOG";
  ASSERT_TRUE(FetchWalFileAhead(*archive_, "main", Name(1), dest, options).ok());
  EXPECT_EQ(Read(dest), Segment(1));
  EXPECT_EQ(Read(spool_ + "/BOOT"), Read("/proc/sys/kernel/random/boot_id"));
}

TEST_F(WalPrefetchTest, OffServesDirectlyAndLeavesNoSpool) {
  WalPrefetchOptions options;
  options.depth = 0;
  const std::string dest = dir_ + "/pg_wal/RECOVERYXLOG";
  ASSERT_TRUE(FetchWalFileAhead(*archive_, "main", Name(4), dest, options).ok());
  EXPECT_EQ(Read(dest), Segment(4));
  EXPECT_FALSE(std::filesystem::exists(spool_));
}

// Only a file past the archive's end is "not in the archive" (restore_command's exit 1, the
// end of recovery). A segment wholly inside a hole, or one the hole cuts short, is data loss:
// recovery must stop there, not end there and promote.
TEST(WalFetchTest, ASegmentInsideAGapIsDataLossNotTheEnd) {
  const std::string dir = TestDir("wal-fetch") + "/archive";
  MakeArchiveWith(dir, {{0, kSeg + kSeg / 2}, {4 * kSeg, 5 * kSeg}});  // nothing in [1.5, 4) segments
  auto archive = OpenReadOnly(dir);
  EXPECT_TRUE(MaterialiseWalFile(*archive, "main", Name(0)).ok());
  for (uint64_t segno : {1, 2, 3}) {
    auto f = MaterialiseWalFile(*archive, "main", Name(segno));
    EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss) << segno << ": " << f.status();
    EXPECT_FALSE(IsNotInArchive(f.status())) << segno;
  }
  EXPECT_TRUE(MaterialiseWalFile(*archive, "main", Name(4)).ok());
  auto past = MaterialiseWalFile(*archive, "main", Name(5));
  EXPECT_TRUE(IsNotInArchive(past.status())) << past.status();
  auto history = MaterialiseWalFile(*archive, "main", "00000002.history");
  EXPECT_TRUE(IsNotInArchive(history.status())) << history.status();
  // A source the archive does not have is a configuration error, never "not in the archive".
  auto other = MaterialiseWalFile(*archive, "other", Name(0));
  EXPECT_FALSE(other.ok());
  EXPECT_FALSE(IsNotInArchive(other.status())) << other.status();
  // Neither is a destination that cannot be written.
  absl::Status dest = FetchWalFile(*archive, "main", Name(0), dir + "/no/such/dir/file");
  EXPECT_FALSE(dest.ok());
  EXPECT_FALSE(IsNotInArchive(dest)) << dest;
}

}  // namespace
}  // namespace ferry::restore
