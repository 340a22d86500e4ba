// WalDecoder against synthetic PostgreSQL 15 WAL built here byte by byte (page headers,
// records with real CRC-32C), and byte damage. Real server WAL is covered by the integration
// tests, where every streamed record passes through the decoder.
#include "ingest/pg/wal_decoder.h"

#include <random>

#include <gtest/gtest.h>

#include "pipeline/endian.h"

namespace ferry::ingest::pg {
namespace {

using pipeline::Lsn;

constexpr uint64_t kSeg = 1 << 20;  // 1 MiB segments keep tests small
constexpr uint64_t kPage = 8192;
constexpr uint64_t kSysId = 7711713339227354403ull;

// Writes WAL the way PostgreSQL lays it out, from `start` (a segment boundary).
class WalWriter {
 public:
  explicit WalWriter(uint64_t start) : start_(start) {}

  uint64_t pos() const { return start_ + bytes_.size(); }
  const std::string& bytes() const { return bytes_; }

  // Appends one record; returns its start LSN. main_data goes after a DATA_SHORT/LONG header.
  uint64_t Add(uint8_t rmid, uint8_t info, const std::string& main_data, uint32_t xid = 0) {
    std::string rec(24, '\0');
    if (main_data.size() < 256) {
      rec += static_cast<char>(255);
      rec += static_cast<char>(main_data.size());
    } else {
      rec += static_cast<char>(254);
      char len[4];
      pipeline::PutLe32(len, static_cast<uint32_t>(main_data.size()));
      rec.append(len, 4);
    }
    rec += main_data;
    pipeline::PutLe32(rec.data(), static_cast<uint32_t>(rec.size()));
    pipeline::PutLe32(rec.data() + 4, xid);
    pipeline::PutLe64(rec.data() + 8, prev_);
    rec[16] = static_cast<char>(info);
    rec[17] = static_cast<char>(rmid);
    uint32_t crc = Crc32cExtend(0xFFFFFFFFu, rec.data() + 24, rec.size() - 24);
    crc = Crc32cExtend(crc, rec.data(), 20) ^ 0xFFFFFFFFu;
    pipeline::PutLe32(rec.data() + 20, crc);
    if (pos() % kPage == 0) PageHeader(0);  // a record at a page start begins after the header
    const uint64_t at = pos();
    prev_ = at;
    Emit(rec);
    while (pos() % 8 != 0) bytes_ += '\0';
    return at;
  }

  uint64_t AddCommit(int64_t pg_time) {
    std::string main(8, '\0');
    pipeline::PutLe64(main.data(), static_cast<uint64_t>(pg_time));
    return Add(1, 0x00, main, 700);
  }

  // XLOG_SWITCH, then zero-filled pages (with headers) to the end of the segment.
  void Switch() {
    Add(0, 0x40, "");
    while (pos() % kSeg != 0) {
      if (pos() % kPage == 0) PageHeader(0);
      bytes_ += '\0';
    }
  }

 private:
  void PageHeader(uint32_t rem_len) {
    const bool is_long = pos() % kSeg == 0;
    std::string h(is_long ? 40 : 24, '\0');
    pipeline::PutLe16(h.data(), 0xD110);
    pipeline::PutLe16(h.data() + 2, static_cast<uint16_t>((rem_len ? 1 : 0) | (is_long ? 2 : 0)));
    pipeline::PutLe32(h.data() + 4, 1);
    pipeline::PutLe64(h.data() + 8, pos());
    pipeline::PutLe32(h.data() + 16, rem_len);
    if (is_long) {
      pipeline::PutLe64(h.data() + 24, kSysId);
      pipeline::PutLe32(h.data() + 32, static_cast<uint32_t>(kSeg));
      pipeline::PutLe32(h.data() + 36, static_cast<uint32_t>(kPage));
    }
    bytes_ += h;
  }

  void Emit(const std::string& rec) {
    for (size_t i = 0; i < rec.size(); ++i) {
      if (pos() % kPage == 0) PageHeader(i == 0 ? 0 : static_cast<uint32_t>(rec.size() - i));
      bytes_ += rec[i];
    }
  }

  uint64_t start_;
  uint64_t prev_ = 0;
  std::string bytes_;
};

struct Sample {
  std::string wal;
  std::vector<uint64_t> record_starts;
  std::vector<int64_t> commit_unix_us;
};

Sample MakeSample(int records) {
  WalWriter w(kSeg);  // 0/100000
  Sample s;
  std::mt19937 rng(5);
  for (int i = 0; i < records; ++i) {
    if (i % 10 == 3) {
      const int64_t t = 832000000000000 + i;  // µs since 2000-01-01
      s.record_starts.push_back(w.AddCommit(t));
      s.commit_unix_us.push_back(t + pipeline::kPgEpochUnixMicros);
    } else {
      // Sizes from tiny to several pages, so headers and bodies split across pages.
      const size_t n = (i % 17 == 0) ? 20000 + rng() % 5000 : rng() % 300;
      std::string data(n, static_cast<char>('a' + i % 26));
      s.record_starts.push_back(w.Add(10, 0x00, data, static_cast<uint32_t>(i)));
    }
  }
  s.wal = w.bytes();
  return s;
}

TEST(Crc32cTest, KnownVector) {
  const std::string v = "123456789";
  EXPECT_EQ(Crc32cExtend(0xFFFFFFFFu, v.data(), v.size()) ^ 0xFFFFFFFFu, 0xE3069283u);
}

TEST(WalDecoderTest, VerifiesEveryRecordAndExtractsCommitTimes) {
  Sample s = MakeSample(800);
  ASSERT_GT(s.wal.size(), kSeg);  // crosses into a second segment (long page header)
  WalDecoder d(kSeg, kSysId);
  d.Reset(Lsn(kSeg), false);
  std::vector<CommitInfo> commits;
  ASSERT_TRUE(d.Feed(s.wal, &commits).ok());
  EXPECT_EQ(d.records_verified(), 800u);
  ASSERT_EQ(commits.size(), s.commit_unix_us.size());
  for (size_t i = 0; i < commits.size(); ++i) {
    EXPECT_EQ(commits[i].commit_time, s.commit_unix_us[i]);
    EXPECT_EQ(commits[i].xid, 700u);
  }
  EXPECT_EQ(d.position().value(), kSeg + s.wal.size());
}

TEST(WalDecoderTest, ChunkingDoesNotMatter) {
  Sample s = MakeSample(200);
  std::mt19937 rng(9);
  for (int mode = 0; mode < 2; ++mode) {
    WalDecoder d(kSeg, kSysId);
    d.Reset(Lsn(kSeg), false);
    std::vector<CommitInfo> commits;
    size_t at = 0;
    while (at < s.wal.size()) {
      const size_t n = mode == 0 ? 1 : std::min<size_t>(s.wal.size() - at, 1 + rng() % 20000);
      absl::Status st = d.Feed(absl::string_view(s.wal).substr(at, n), &commits);
      ASSERT_TRUE(st.ok()) << "at " << at << ": " << st;
      at += n;
    }
    EXPECT_EQ(d.records_verified(), 200u) << "mode " << mode << " pos " << d.position().ToString();
    EXPECT_EQ(commits.size(), s.commit_unix_us.size());
  }
}

TEST(WalDecoderTest, FlippedByteInRecordIsDataLossNamingIt) {
  Sample s = MakeSample(100);
  const uint64_t victim = s.record_starts[50];
  std::string bad = s.wal;
  bad[victim - kSeg + 20] ^= 0x01;  // inside the stored CRC
  WalDecoder d(kSeg, kSysId);
  d.Reset(Lsn(kSeg), false);
  absl::Status st = d.Feed(bad, nullptr);
  ASSERT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find(Lsn(victim).ToString()), absl::string_view::npos) << st;
  EXPECT_NE(st.message().find("crc"), absl::string_view::npos) << st;
  EXPECT_EQ(d.records_verified(), 50u);  // everything before it passed, nothing after
}

TEST(WalDecoderTest, BadPageHeadersAreRejected) {
  Sample s = MakeSample(100);
  {
    std::string bad = s.wal;
    bad[kPage] ^= 0x01;  // magic of the second page
    WalDecoder d(kSeg, kSysId);
    d.Reset(Lsn(kSeg), false);
    absl::Status st = d.Feed(bad, nullptr);
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(st.message().find("page magic"), absl::string_view::npos) << st;
  }
  {
    std::string bad = s.wal;
    bad[kPage + 9] ^= 0x01;  // xlp_pageaddr of the second page
    WalDecoder d(kSeg, kSysId);
    d.Reset(Lsn(kSeg), false);
    EXPECT_EQ(d.Feed(bad, nullptr).code(), absl::StatusCode::kDataLoss);
  }
  {
    WalDecoder d(kSeg, kSysId + 1);  // another system's WAL
    d.Reset(Lsn(kSeg), false);
    EXPECT_EQ(d.Feed(s.wal, nullptr).code(), absl::StatusCode::kDataLoss);
  }
}

TEST(WalDecoderTest, SwitchSkipsToTheNextSegment) {
  WalWriter w(kSeg);
  w.Add(10, 0, "before");
  w.Switch();
  ASSERT_EQ(w.pos(), 2 * kSeg);
  w.Add(10, 0, "after");
  w.AddCommit(1);
  WalDecoder d(kSeg, kSysId);
  d.Reset(Lsn(kSeg), false);
  std::vector<CommitInfo> commits;
  absl::Status st = d.Feed(w.bytes(), &commits);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(d.records_verified(), 4u);  // before, SWITCH, after, commit
  EXPECT_EQ(commits.size(), 1u);
}

TEST(WalDecoderTest, ResyncMidStreamSkipsTheContinuation) {
  Sample s = MakeSample(300);
  // Start in the middle of a big record: the decoder must skip to the next page and past the
  // record's continuation, then verify every record that starts after that.
  const uint64_t big = s.record_starts[17];  // i % 17 == 0: a multi-page record
  const uint64_t from = big + 100;
  WalDecoder d(kSeg, kSysId);
  d.Reset(Lsn(from), false);
  ASSERT_TRUE(d.Feed(absl::string_view(s.wal).substr(from - kSeg), nullptr).ok());
  size_t expected = 0;
  for (uint64_t r : s.record_starts) expected += r > big ? 1 : 0;
  EXPECT_EQ(d.records_verified(), expected);
}

}  // namespace
}  // namespace ferry::ingest::pg
