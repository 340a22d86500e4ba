// Frame encode/decode round trips and byte-damage detection.
#include "pipeline/frame.h"

#include <gtest/gtest.h>

#include "pipeline/position.h"

namespace ferry::pipeline {
namespace {

std::vector<Record> SampleRecords() {
  std::vector<Record> records;
  uint64_t pos = 1000;
  for (int i = 0; i < 5; ++i) {
    Record r;
    r.payload = std::string(100 + i * 37, static_cast<char>('a' + i));
    pos += r.payload.size();
    r.end_pos = pos;
    r.data_ts = i == 2 ? 111 : (i == 4 ? 222 : 0);
    records.push_back(std::move(r));
  }
  return records;
}

class FrameCodecTest : public ::testing::TestWithParam<int> {};

TEST_P(FrameCodecTest, RoundTripsRecordsAndHeader) {
  std::vector<Record> records = SampleRecords();
  std::string out = "prefix";
  auto h = EncodeFrame(FrameInput{7, 1000, 555, records}, GetParam(), &out);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(out.size(), 6 + h->frame_size());
  absl::string_view frame = absl::string_view(out).substr(6);
  auto d = DecodeFrameHeader(frame);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->epoch, 7u);
  EXPECT_EQ(d->start_pos, 1000u);
  EXPECT_EQ(d->end_pos, records.back().end_pos);
  EXPECT_EQ(d->record_count, 5u);
  EXPECT_EQ(d->arrival_us, 555);
  EXPECT_EQ(d->first_data_ts, 111);
  EXPECT_EQ(d->last_data_ts, 222);
  std::string scratch;
  auto views = DecodeFramePayload(*d, frame.substr(kFrameHeaderSize), &scratch);
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ((*views)[i].payload, records[i].payload);
    EXPECT_EQ((*views)[i].end_pos, records[i].end_pos);
  }
}

TEST_P(FrameCodecTest, EveryFlippedByteIsDetected) {
  std::vector<Record> records = SampleRecords();
  std::string out;
  auto h = EncodeFrame(FrameInput{1, 1000, 1, records}, GetParam(), &out);
  ASSERT_TRUE(h.ok());
  for (size_t i = 0; i < out.size(); ++i) {
    std::string bad = out;
    bad[i] ^= 0x01;
    auto d = DecodeFrameHeader(bad);
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
      continue;
    }
    std::string scratch;
    auto views = DecodeFramePayload(*d, absl::string_view(bad).substr(kFrameHeaderSize), &scratch);
    ASSERT_FALSE(views.ok()) << "flip at byte " << i << " went unnoticed";
    EXPECT_EQ(views.status().code(), absl::StatusCode::kDataLoss);
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, FrameCodecTest, ::testing::Values(0, 1, 3));

TEST(FrameTest, TruncatedHeaderIsDataLoss) {
  auto d = DecodeFrameHeader(std::string(10, 'x'));
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
}

TEST(PositionTest, LsnPrintsAndParsesLikePostgres) {
  EXPECT_EQ(Lsn(0x16B3748).ToString(), "0/016B3748");
  auto l = Lsn::Parse("A/16B3748");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->value(), (0xAull << 32) | 0x16B3748);
  EXPECT_EQ(Lsn::Parse("nope").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Lsn::Parse("1/").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PositionTest, Rfc3339RoundTrip) {
  auto t = ParseRfc3339("2026-11-24T10:00:00Z");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(FormatUnixMicros(*t), "2026-11-24T10:00:00.000000Z");
  EXPECT_FALSE(ParseRfc3339("yesterday").ok());
}

}  // namespace
}  // namespace ferry::pipeline
