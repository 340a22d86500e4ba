// StreamLog: both writers against an in-memory model, torn-tail repair, and byte damage.
#include "storage/stream_log.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <atomic>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "storage/archive.h"
#include "storage/segment_format.h"
#include "tests/fixtures/scratch.h"

namespace ferry::storage {
namespace {

using ::ferry::testing::FlipByte;
using ::ferry::testing::TestDir;

using pipeline::EncodedFrames;
using pipeline::Record;

StreamLogOptions Writable(WriterKind kind = WriterKind::kPosix, uint64_t segment_bytes = 64 << 20) {
  StreamLogOptions o;
  o.writer = kind;
  o.segment_bytes = segment_bytes;
  o.read_only = false;
  return o;
}

// Encodes `n` frames of contiguous records starting at *pos.
EncodedFrames MakeFrames(int n, uint64_t* pos, std::mt19937* rng, std::string* model) {
  EncodedFrames out;
  for (int i = 0; i < n; ++i) {
    std::vector<Record> records;
    const uint64_t start = *pos;
    const int count = 1 + static_cast<int>((*rng)() % 4);
    for (int j = 0; j < count; ++j) {
      Record r;
      r.payload.resize(1 + (*rng)() % 3000);
      for (char& c : r.payload) c = static_cast<char>('a' + (*rng)() % 7);
      *pos += r.payload.size();
      r.end_pos = *pos;
      model->append(r.payload);
      records.push_back(std::move(r));
    }
    auto h = pipeline::EncodeFrame({1, start, 42, records}, 1, &out.bytes);
    EXPECT_TRUE(h.ok());
    out.headers.push_back(*h);
  }
  return out;
}

std::string ReadAll(const StreamLog& log) {
  std::string all;
  std::string scratch;
  for (const auto& f : log.frames()) {
    auto recs = log.ReadRecords(f, &scratch);
    EXPECT_TRUE(recs.ok()) << recs.status();
    if (!recs.ok()) break;
    for (const auto& r : *recs) all.append(r.payload.data(), r.payload.size());
  }
  return all;
}

class StreamLogWriterTest : public ::testing::TestWithParam<WriterKind> {};

// Model-based: random appends and reopens; the log always reads back exactly what the model
// holds, across segment rolls, whichever writer wrote it.
TEST_P(StreamLogWriterTest, MatchesModelAcrossReopensAndRolls) {
  const std::string dir = TestDir("ferry-test");
  std::mt19937 rng(7);
  std::string model;
  uint64_t pos = 1000;
  const StreamLogOptions o = Writable(GetParam(), 16 << 10);  // small: rolls happen often
  for (int round = 0; round < 6; ++round) {
    auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, o);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ(ReadAll(**log), model);
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE((*log)->Write(MakeFrames(1 + rng() % 5, &pos, &rng, &model)).ok());
    }
    EXPECT_EQ(ReadAll(**log), model);
    ASSERT_FALSE((*log)->frames().empty());
    EXPECT_EQ((*log)->frames().back().header.end_pos, pos);
  }
  StreamLogOptions ro;
  auto reader = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, ro);
  ASSERT_TRUE(reader.ok());
  std::vector<Damage> damage;
  (*reader)->Verify(&damage);
  EXPECT_TRUE(damage.empty());
  EXPECT_EQ(ReadAll(**reader), model);
  EXPECT_GT(std::distance(std::filesystem::directory_iterator(dir), {}), 4);  // several segments
  std::filesystem::remove_all(dir);
}

// A tailing reader (the Kafka shipper) opened before and while the writer appends sees every
// frame exactly once, in order, across segment rolls, and leaves a frame still being written
// (a torn tail) for the next Refresh.
TEST(StreamLogTest, RefreshTailsAWriter) {
  const std::string dir = TestDir("ferry-test");
  std::mt19937 rng(5);
  std::string model;
  uint64_t pos = 0;
  auto writer = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, Writable(WriterKind::kPosix, 8 << 10));
  ASSERT_TRUE(writer.ok()) << writer.status();
  auto reader = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, StreamLogOptions{});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->empty());
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE((*writer)->Write(MakeFrames(1 + rng() % 3, &pos, &rng, &model)).ok());
    if (i % 4 == 0) {
      ASSERT_TRUE((*reader)->Refresh().ok());
      EXPECT_EQ((*reader)->frames().size(), (*writer)->frames().size());
    }
  }
  const std::string written = model;
  // Half a frame at the end, as a writer mid-write leaves it: not visible yet.
  EncodedFrames more = MakeFrames(1, &pos, &rng, &model);
  const std::string seg = (*writer)->SegmentPath((*writer)->frames().back().segment_seq);
  std::ofstream(seg, std::ios::app | std::ios::binary) << more.bytes.substr(0, more.bytes.size() / 2);
  ASSERT_TRUE((*reader)->Refresh().ok());
  ASSERT_EQ((*reader)->frames().size(), (*writer)->frames().size());
  EXPECT_EQ((*reader)->frames().back().header.end_pos, (*writer)->frames().back().header.end_pos);
  EXPECT_EQ(ReadAll(**reader), written);
  EXPECT_GT((*writer)->frames().back().segment_seq, 2u);  // it rolled while being tailed
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Writers, StreamLogWriterTest,
                         ::testing::Values(WriterKind::kIoUring, WriterKind::kPosix));

struct Written {
  std::string dir;
  std::string model;
  uint64_t end = 0;
  std::vector<FrameLocation> frames;
};

Written WriteSome(int frames) {
  Written w;
  w.dir = TestDir("ferry-test");
  std::mt19937 rng(11);
  uint64_t pos = 0;
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, Writable());
  EXPECT_TRUE(log.ok());
  EXPECT_TRUE((*log)->Write(MakeFrames(frames, &pos, &rng, &w.model)).ok());
  w.end = pos;
  w.frames = (*log)->frames();
  return w;
}

off_t SizeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0);
  return st.st_size;
}

TEST(StreamLogTest, FindFrameSeeksByEpochAndPosition) {
  Written w = WriteSome(20);
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, StreamLogOptions{});
  ASSERT_TRUE(log.ok());
  for (const FrameLocation& f : w.frames) {
    for (uint64_t pos : {f.header.start_pos, f.header.end_pos - 1}) {
      const FrameLocation* found = (*log)->FindFrame(1, pos);
      ASSERT_NE(found, nullptr) << pos;
      EXPECT_EQ(found->offset, f.offset);
    }
  }
  EXPECT_EQ((*log)->FindFrame(1, w.end), nullptr);
  EXPECT_EQ((*log)->FindFrame(2, 0), nullptr);
  EXPECT_EQ((*log)->FirstFrameAfter(1, w.end), nullptr);
  std::filesystem::remove_all(w.dir);
}

TEST(StreamLogRecoveryTest, TornTailIsTruncatedOnWritableOpen) {
  Written w = WriteSome(5);
  const std::string seg = w.dir + "/" + SegmentFileName(1);
  const off_t full = SizeOf(seg);
  const auto& last = w.frames.back();
  // A crash mid-write: the last frame is only partly on disk, and (never synced, so never
  // acknowledged) not in the index.
  ASSERT_EQ(truncate(seg.c_str(), static_cast<off_t>(last.offset + 30)), 0);
  const std::string idx = w.dir + "/" + IndexFileName(1);
  ASSERT_EQ(truncate(idx.c_str(), static_cast<off_t>(4 * kIndexEntrySize)), 0);
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, Writable());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->frames().size(), 4u);
  EXPECT_EQ((*log)->repaired_bytes(), 30u);
  EXPECT_EQ(SizeOf(seg), static_cast<off_t>(last.offset));
  EXPECT_LT(SizeOf(seg), full);
  EXPECT_EQ((*log)->frames().back().header.end_pos, last.header.start_pos);
  std::filesystem::remove_all(w.dir);
}

// The index lists a frame only after it was synced: a last segment shorter than its indexed
// frames lost acknowledged data. Neither a reader nor the writer takes that for a torn tail;
// a survey open lists the rest and Verify names the spot once.
TEST(StreamLogRecoveryTest, TruncatedIndexedTailIsDataLoss) {
  Written w = WriteSome(5);
  const std::string seg = w.dir + "/" + SegmentFileName(1);
  const auto& lost = w.frames[3];
  ASSERT_EQ(truncate(seg.c_str(), static_cast<off_t>(lost.offset + 30)), 0);
  for (bool writable : {false, true}) {
    StreamLogOptions o = writable ? Writable() : StreamLogOptions{};
    auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, o);
    ASSERT_FALSE(log.ok()) << "writable=" << writable;
    EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(log.status().message().find(seg), std::string::npos) << log.status();
    EXPECT_NE(log.status().message().find("durable"), std::string::npos) << log.status();
  }
  EXPECT_EQ(SizeOf(seg), static_cast<off_t>(lost.offset + 30));  // the writer truncated nothing
  StreamLogOptions survey;
  survey.survey = true;
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, survey);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->frames().size(), 3u);
  std::vector<Damage> damage;
  (*log)->Verify(&damage);
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_EQ(damage[0].file, seg);
  EXPECT_EQ(damage[0].offset, lost.offset);
  EXPECT_EQ(damage[0].reason.find(seg), std::string::npos) << "the file is named once: " << damage[0].reason;
  std::filesystem::remove_all(w.dir);
}

// 24 frames in 16 KiB segments: several sealed segments and a last one. Empty on failure.
std::string WriteRolled(unsigned seed) {
  const std::string dir = TestDir("ferry-test");
  std::mt19937 rng(seed);
  uint64_t pos = 0;
  std::string model;
  auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, Writable(WriterKind::kPosix, 16 << 10));
  EXPECT_TRUE(log.ok()) << log.status();
  if (!log.ok()) return "";
  for (int i = 0; i < 12; ++i) {
    absl::Status st = (*log)->Write(MakeFrames(2, &pos, &rng, &model));
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return "";
  }
  return dir;
}

// The same for a sealed segment cut exactly at a frame boundary: every frame left checks out,
// but the index recorded more as durable.
TEST(StreamLogRecoveryTest, SealedSegmentCutAtAFrameBoundaryIsDataLoss) {
  const std::string dir = WriteRolled(13);
  ASSERT_FALSE(dir.empty());
  auto before = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, StreamLogOptions{});
  ASSERT_TRUE(before.ok()) << before.status();
  std::vector<FrameLocation> first;
  for (const auto& f : (*before)->frames()) {
    if (f.segment_seq == 1) first.push_back(f);
  }
  ASSERT_GE(first.size(), 3u);
  ASSERT_GT((*before)->frames().back().segment_seq, 1u) << "the log must have rolled";
  const std::string seg = dir + "/" + SegmentFileName(1);
  ASSERT_EQ(truncate(seg.c_str(), static_cast<off_t>(first.back().offset)), 0);
  for (bool writable : {false, true}) {
    auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, writable ? Writable() : StreamLogOptions{});
    ASSERT_FALSE(log.ok()) << "writable=" << writable;
    EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(log.status().message().find("truncated"), std::string::npos) << log.status();
  }
  StreamLogOptions survey;
  survey.survey = true;
  auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, survey);
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<Damage> damage;
  (*log)->Verify(&damage);
  ASSERT_EQ(damage.size(), 1u) << damage[0].reason << " / " << (damage.size() > 1 ? damage[1].reason : "");
  EXPECT_EQ(damage[0].file, seg);
  EXPECT_EQ(damage[0].offset, first.back().offset);
  std::filesystem::remove_all(dir);
}

// CheckFrames, the service's read-back (frames of a segment read together), reports every
// frame once and exactly the damaged one as bad, in a sealed segment a reader lists from its
// index without reading it.
TEST(StreamLogRecoveryTest, CheckFramesFindsTheDamagedFrameInASealedSegment) {
  const std::string dir = WriteRolled(17);
  ASSERT_FALSE(dir.empty());
  auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, StreamLogOptions{});
  ASSERT_TRUE(log.ok()) << log.status();
  const auto& frames = (*log)->frames();
  ASSERT_GT(frames.back().segment_seq, 1u);
  const size_t victim = 1;
  ASSERT_EQ(frames[victim].segment_seq, 1u);
  FlipByte(dir + "/" + SegmentFileName(1), frames[victim].offset + frames[victim].header.frame_size() - 1, 0x08);
  std::vector<size_t> seen, bad;
  (*log)->CheckFrames(0, frames.size() - 1, [&](size_t i, const absl::Status& st) {
    seen.push_back(i);
    if (!st.ok()) bad.push_back(i);
  });
  EXPECT_EQ(seen.size(), frames.size());
  EXPECT_EQ(bad, std::vector<size_t>{victim});
  // Repaired, then the segment cut short before its last frame: only that frame is missing,
  // though the frames of the segment were read together.
  FlipByte(dir + "/" + SegmentFileName(1), frames[victim].offset + frames[victim].header.frame_size() - 1, 0x08);
  size_t last_of_first = 0;
  for (size_t i = 0; i < frames.size() && frames[i].segment_seq == 1; ++i) last_of_first = i;
  ASSERT_GT(last_of_first, victim);
  ASSERT_EQ(truncate((dir + "/" + SegmentFileName(1)).c_str(), static_cast<off_t>(frames[last_of_first].offset)), 0);
  bad.clear();
  (*log)->CheckFrames(0, frames.size() - 1, [&](size_t i, const absl::Status& st) {
    if (!st.ok()) bad.push_back(i);
  });
  EXPECT_EQ(bad, std::vector<size_t>{last_of_first});
  std::filesystem::remove_all(dir);
}

// A damaged frame in the middle is one spot, not a spot and then a gap after it, whether the
// open or Verify finds it.
TEST(StreamLogRecoveryTest, DamagedFrameIsReportedOnce) {
  Written w = WriteSome(6);
  const std::string seg = w.dir + "/" + SegmentFileName(1);
  int fd = open(seg.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const off_t at = static_cast<off_t>(w.frames[2].offset + pipeline::kFrameHeaderSize + 5);
  char c;
  ASSERT_EQ(pread(fd, &c, 1, at), 1);
  c ^= 0x01;
  ASSERT_EQ(pwrite(fd, &c, 1, at), 1);
  close(fd);
  // The writer's open scans the last segment: it finds the damage there.
  StreamLogOptions survey;
  survey.survey = true;
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, survey);
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<Damage> damage;
  (*log)->Verify(&damage);
  ASSERT_EQ(damage.size(), 1u) << damage[0].reason << " / " << (damage.size() > 1 ? damage[1].reason : "");
  EXPECT_EQ(damage[0].offset, w.frames[2].offset);
  EXPECT_NE(damage[0].reason.find("checksum"), std::string::npos) << damage[0].reason;
  std::filesystem::remove_all(w.dir);
}

TEST(StreamLogRecoveryTest, ZeroFilledTailIsTorn) {
  Written w = WriteSome(3);
  const std::string seg = w.dir + "/" + SegmentFileName(1);
  const off_t size = SizeOf(seg);
  ASSERT_EQ(truncate(seg.c_str(), size + 4096), 0);  // size grew, data never landed
  StreamLogOptions ro;
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, ro);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->frames().size(), 3u);
  EXPECT_EQ(SizeOf(seg), size + 4096);  // read-only never modifies
  std::filesystem::remove_all(w.dir);
}

uint64_t EndOf(const FrameLocation& f) { return f.offset + f.header.frame_size(); }

// The zeros a writer keeps after the active segment's last frame (StreamLogOptions::zero_ahead).
TEST(StreamLogZeroAheadTest, ActiveSegmentEndsInZerosThatAreNeitherDataNorTorn) {
  Written w = WriteSome(5);
  const std::string seg = w.dir + "/" + SegmentFileName(1);
  const uint64_t data_end = EndOf(w.frames.back());
  ASSERT_GE(static_cast<uint64_t>(SizeOf(seg)), data_end + StreamLogOptions{}.zero_ahead / 2);
  std::string tail;
  {
    std::ifstream in(seg, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(data_end));
    tail.assign(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_EQ(tail.find_first_not_of('\0'), std::string::npos);
  for (const StreamLogOptions& o : {StreamLogOptions{}, Writable()}) {
    auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, o);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ((*log)->frames().size(), 5u);
    EXPECT_EQ((*log)->repaired_bytes(), 0u);
    EXPECT_EQ((*log)->total_bytes(), data_end);
  }
  // A writer reopened appends right after the last frame, over the zeros.
  std::mt19937 rng(12);
  uint64_t pos = w.end;
  {
    auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, Writable());
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE((*log)->Write(MakeFrames(3, &pos, &rng, &w.model)).ok());
    EXPECT_EQ((*log)->frames()[5].offset, data_end);
  }
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, StreamLogOptions{});
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(ReadAll(**log), w.model);
  std::vector<Damage> damage;
  (*log)->Verify(&damage);
  EXPECT_TRUE(damage.empty()) << damage[0].reason;
  std::filesystem::remove_all(w.dir);
}

TEST(StreamLogZeroAheadTest, SealedSegmentsEndAtTheirLastFrame) {
  const std::string dir = TestDir("ferry-test");
  std::mt19937 rng(5);
  uint64_t pos = 0;
  std::string model;
  StreamLogOptions o = Writable();
  o.segment_bytes = 64 << 10;
  {
    auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, o);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 40; ++i) ASSERT_TRUE((*log)->Write(MakeFrames(2, &pos, &rng, &model)).ok());
    const auto& frames = (*log)->frames();
    ASSERT_GT(frames.back().segment_seq, 2u);
    uint64_t data = 0;
    for (size_t i = 0; i + 1 < frames.size(); ++i) {
      if (frames[i + 1].segment_seq == frames[i].segment_seq) continue;
      EXPECT_EQ(static_cast<uint64_t>(SizeOf((*log)->SegmentPath(frames[i].segment_seq))), EndOf(frames[i]));
      data += EndOf(frames[i]);
    }
    EXPECT_EQ((*log)->total_bytes(), data + EndOf(frames.back()));  // not the zeros ahead
  }
  auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, StreamLogOptions{});
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(ReadAll(**log), model);
  std::filesystem::remove_all(dir);
}

TEST(StreamLogZeroAheadTest, FrameTornIntoTheZerosIsCutAndWritingGoesOn) {
  Written w = WriteSome(4);
  const std::string seg = w.dir + "/" + SegmentFileName(1);
  // A crash mid-write: half of a fifth frame landed in the zeros, its sync never returned.
  std::mt19937 rng(13);
  uint64_t pos = w.end;
  std::string unacknowledged;
  EncodedFrames torn = MakeFrames(1, &pos, &rng, &unacknowledged);
  const uint64_t data_end = EndOf(w.frames.back());
  {
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(data_end));
    f << torn.bytes.substr(0, torn.bytes.size() / 2);
  }
  auto ro = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, StreamLogOptions{});
  ASSERT_TRUE(ro.ok()) << ro.status();
  EXPECT_EQ((*ro)->frames().size(), 4u);
  {
    auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, Writable());
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ(static_cast<uint64_t>(SizeOf(seg)), data_end);  // cut at the torn frame, zeros and all
    pos = w.end;
    ASSERT_TRUE((*log)->Write(MakeFrames(2, &pos, &rng, &w.model)).ok());
  }
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, StreamLogOptions{});
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->frames().size(), 6u);
  EXPECT_EQ(ReadAll(**log), w.model);
  std::filesystem::remove_all(w.dir);
}

TEST(StreamLogZeroAheadTest, ZerosBeforeALaterFrameAreDamageNotTheEnd) {
  Written w = WriteSome(6);
  const std::string seg = w.dir + "/" + SegmentFileName(1);
  // Frames 3 and 4 zeroed (a lost block), the index cut so it vouches for none of them: the
  // later frames show that this is not where the writer stopped.
  const std::string zeros(EndOf(w.frames[4]) - w.frames[3].offset, '\0');
  {
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(w.frames[3].offset));
    f << zeros;
  }
  ASSERT_EQ(truncate((w.dir + "/" + IndexFileName(1)).c_str(), static_cast<off_t>(2 * kIndexEntrySize)), 0);
  for (const StreamLogOptions& o : {StreamLogOptions{}, Writable()}) {
    auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, o);
    ASSERT_FALSE(log.ok());
    EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss) << log.status();
    EXPECT_NE(log.status().message().find("offset " + std::to_string(w.frames[3].offset)), absl::string_view::npos)
        << log.status();
  }
  std::filesystem::remove_all(w.dir);
}

// The same zeros where the index vouches for frames: acknowledged data was lost, not a segment
// torn at creation.
TEST(StreamLogZeroAheadTest, AZeroedSegmentWithIndexedFramesIsDataLoss) {
  Written w = WriteSome(3);
  const std::string seg = w.dir + "/" + SegmentFileName(1);
  const off_t size = SizeOf(seg);
  std::ofstream(seg, std::ios::binary | std::ios::trunc) << std::string(static_cast<size_t>(size), '\0');
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, Writable());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss) << log.status();
  EXPECT_TRUE(std::filesystem::exists(seg));
  std::filesystem::remove_all(w.dir);
}

TEST(StreamLogZeroAheadTest, SegmentTornAtCreationIsRemoved) {
  Written w = WriteSome(3);
  // A crash while the second segment was created (after the first was sealed, i.e. cut at
  // its last frame): its zeros landed, its header did not.
  ASSERT_EQ(truncate((w.dir + "/" + SegmentFileName(1)).c_str(), static_cast<off_t>(EndOf(w.frames.back()))), 0);
  const std::string seg2 = w.dir + "/" + SegmentFileName(2);
  std::ofstream(seg2, std::ios::binary) << std::string(StreamLogOptions{}.zero_ahead, '\0');
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, Writable());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_FALSE(std::filesystem::exists(seg2));
  EXPECT_EQ((*log)->frames().size(), 3u);
  std::filesystem::remove_all(w.dir);
}

TEST(StreamLogRecoveryTest, FlippedByteMidSegmentIsDataLossNamingFileAndOffset) {
  Written w = WriteSome(6);
  const std::string seg = w.dir + "/" + SegmentFileName(1);
  const auto& victim = w.frames[2];
  int fd = open(seg.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c;
  const off_t at = static_cast<off_t>(victim.offset + pipeline::kFrameHeaderSize + 5);
  ASSERT_EQ(pread(fd, &c, 1, at), 1);
  c ^= 0x40;
  ASSERT_EQ(pwrite(fd, &c, 1, at), 1);
  close(fd);
  const off_t size = SizeOf(seg);
  auto log = StreamLog::Open(w.dir, pipeline::StreamKind::kPgWal, Writable());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(log.status().message().find(seg), absl::string_view::npos) << log.status();
  EXPECT_NE(log.status().message().find("offset " + std::to_string(victim.offset)),
            absl::string_view::npos)
      << log.status();
  EXPECT_EQ(SizeOf(seg), size) << "damaged data must not be truncated away";
  std::filesystem::remove_all(w.dir);
}

TEST(StreamLogRecoveryTest, VerifyReportsDamageInSealedSegment) {
  const std::string dir = TestDir("ferry-test");
  std::mt19937 rng(3);
  std::string model;
  uint64_t pos = 0;
  const StreamLogOptions o = Writable(WriterKind::kPosix, 8 << 10);
  {
    auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, o);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Write(MakeFrames(2, &pos, &rng, &model)).ok());
  }
  const std::string seg = dir + "/" + SegmentFileName(1);
  int fd = open(seg.c_str(), O_RDWR);
  char c = 0x55;
  ASSERT_EQ(pwrite(fd, &c, 1, kSegmentHeaderSize + pipeline::kFrameHeaderSize + 3), 1);
  close(fd);
  StreamLogOptions ro;
  auto log = StreamLog::Open(dir, pipeline::StreamKind::kPgWal, ro);
  ASSERT_TRUE(log.ok()) << log.status();  // sealed segments are trusted via their index
  std::vector<Damage> damage;
  (*log)->Verify(&damage);
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_EQ(damage[0].file, seg);
  EXPECT_EQ(damage[0].offset, kSegmentHeaderSize);
  std::filesystem::remove_all(dir);
}


TEST(ArchiveTest, SecondWriterIsRefusedAndMissingArchiveIsNamed) {
  const std::string dir = TestDir("ferry-test") + "/a";
  ArchiveOptions w;
  w.writable = true;
  auto first = Archive::Open(dir, w);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Archive::Open(dir, w);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  auto missing = Archive::Open(dir + "/nope", ArchiveOptions{});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir + "/nope"), absl::string_view::npos);
}

}  // namespace
}  // namespace ferry::storage
