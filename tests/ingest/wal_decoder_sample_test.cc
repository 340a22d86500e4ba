// WalDecoder against real PostgreSQL 15 WAL: two consecutive 1 MiB segments recorded by
// tests/testdata/make_wal_sample.sh, checked against what pg_waldump reported for them.
#include <zstd.h>

#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "ingest/pg/wal_decoder.h"
#include "pipeline/position.h"

namespace ferry::ingest::pg {
namespace {

using pipeline::Lsn;

struct ExpectedCommit {
  uint32_t xid = 0;
  pipeline::UnixMicros time = 0;
};

struct WalSample {
  Lsn start;        // LSN of the first segment's first byte
  std::string wal;  // both segments, back to back
  uint64_t segment_bytes = 0;
  uint64_t system_id = 0;
  uint64_t records = 0;
  std::vector<ExpectedCommit> commits;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Unzstd(const std::string& z) {
  const unsigned long long size = ZSTD_getFrameContentSize(z.data(), z.size());
  EXPECT_NE(size, ZSTD_CONTENTSIZE_ERROR);
  EXPECT_NE(size, ZSTD_CONTENTSIZE_UNKNOWN);
  std::string out(size, '\0');
  const size_t n = ZSTD_decompress(out.data(), out.size(), z.data(), z.size());
  EXPECT_FALSE(ZSTD_isError(n)) << ZSTD_getErrorName(n);
  out.resize(n);
  return out;
}

WalSample LoadSample() {
  const std::string dir = std::string(FERRY_TESTDATA_DIR) + "/wal_sample/";
  WalSample s;
  std::vector<std::string> segments;
  for (absl::string_view line : absl::StrSplit(ReadFile(dir + "expected.txt"), '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.empty() || f[0] == "#") continue;
    if (f[0] == "segments") {
      segments.assign(f.begin() + 1, f.end());
    } else if (f[0] == "segment_bytes") {
      EXPECT_TRUE(absl::SimpleAtoi(f[1], &s.segment_bytes));
    } else if (f[0] == "system_id") {
      EXPECT_TRUE(absl::SimpleAtoi(f[1], &s.system_id));
    } else if (f[0] == "records") {
      EXPECT_TRUE(absl::SimpleAtoi(f[1], &s.records));
    } else if (f[0] == "commit") {
      ExpectedCommit c;
      EXPECT_TRUE(absl::SimpleAtoi(f[1], &c.xid));
      absl::StatusOr<pipeline::UnixMicros> t = pipeline::ParseRfc3339(f[2]);
      EXPECT_TRUE(t.ok()) << t.status();
      c.time = t.value_or(0);
      s.commits.push_back(c);
    }
  }
  EXPECT_EQ(segments.size(), 2u);
  for (const std::string& name : segments) s.wal += Unzstd(ReadFile(dir + name + ".zst"));
  // File name: timeline, then the segment number as (segno / per_id, segno % per_id) in hex.
  if (!segments.empty() && s.segment_bytes != 0) {
    uint64_t hi = 0;
    uint64_t lo = 0;
    EXPECT_TRUE(absl::SimpleHexAtoi(segments[0].substr(8, 8), &hi));
    EXPECT_TRUE(absl::SimpleHexAtoi(segments[0].substr(16, 8), &lo));
    s.start = Lsn((hi * (0x100000000ull / s.segment_bytes) + lo) * s.segment_bytes);
  }
  return s;
}

struct Result {
  absl::Status status;
  uint64_t records = 0;
  Lsn position;
  std::vector<CommitInfo> commits;
};

// Feeds `wal` from `from` (default: the sample's start, resynchronising there, since the first
// segment may begin with the tail of a record from the one before).
Result Decode(const WalSample& s, absl::string_view wal, const std::vector<size_t>& pieces,
              Lsn from = Lsn(), bool at_record_boundary = false) {
  WalDecoder d(s.segment_bytes, s.system_id);
  if (!from.valid()) from = s.start;
  d.Reset(from, at_record_boundary);
  Result r;
  size_t at = 0;
  for (size_t i = 0; at < wal.size() && r.status.ok(); ++i) {
    const size_t n = pieces.empty() ? wal.size() : pieces[i % pieces.size()];
    r.status = d.Feed(wal.substr(at, n), &r.commits);
    at += n;
  }
  r.records = d.records_verified();
  r.position = d.position();
  return r;
}

TEST(WalDecoderSampleTest, MatchesPgWaldump) {
  const WalSample s = LoadSample();
  ASSERT_EQ(s.wal.size(), 2 * s.segment_bytes);
  ASSERT_GT(s.records, 0u);
  std::mt19937 rng(1);
  std::vector<size_t> random_pieces;
  for (int i = 0; i < 500; ++i) random_pieces.push_back(1 + rng() % 20000);
  for (const std::vector<size_t>& pieces :
       std::vector<std::vector<size_t>>{{}, {1}, {8192}, {1000}, random_pieces}) {
    const Result r = Decode(s, s.wal, pieces);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.records, s.records);
    EXPECT_EQ(r.position, Lsn(s.start.value() + s.wal.size()));
    ASSERT_EQ(r.commits.size(), s.commits.size());
    for (size_t i = 0; i < r.commits.size(); ++i) {
      EXPECT_EQ(r.commits[i].xid, s.commits[i].xid) << i;
      EXPECT_EQ(r.commits[i].commit_time, s.commits[i].time) << i;
      if (i > 0) {
        EXPECT_GT(r.commits[i].end_lsn, r.commits[i - 1].end_lsn);
      }
    }
  }
}

// Decoding from the middle of the stream yields the tail of the full run's commits.
void ExpectCommitSuffix(const std::vector<CommitInfo>& part, const std::vector<CommitInfo>& all) {
  ASSERT_LE(part.size(), all.size());
  const size_t skip = all.size() - part.size();
  for (size_t i = 0; i < part.size(); ++i) {
    EXPECT_EQ(part[i].end_lsn, all[skip + i].end_lsn) << i;
    EXPECT_EQ(part[i].commit_time, all[skip + i].commit_time) << i;
  }
}

TEST(WalDecoderSampleTest, ResumeAnywhere) {
  const WalSample s = LoadSample();
  ASSERT_EQ(s.wal.size(), 2 * s.segment_bytes);
  const Result full = Decode(s, s.wal, {});
  ASSERT_TRUE(full.status.ok()) << full.status;
  // Resynchronising at arbitrary positions, including just before the second segment's long
  // header and inside the zero filler after XLOG_SWITCH.
  for (uint64_t off :
       {uint64_t{0x1234}, uint64_t{0x8000}, uint64_t{0x10001}, uint64_t{0x77777},
        s.segment_bytes - 100, s.segment_bytes + 0x3000, 2 * s.segment_bytes - 0x10000}) {
    const Lsn from(s.start.value() + off);
    const Result r = Decode(s, absl::string_view(s.wal).substr(off), {4096}, from);
    ASSERT_TRUE(r.status.ok()) << from.ToString() << ": " << r.status;
    EXPECT_EQ(r.position, full.position);
    ExpectCommitSuffix(r.commits, full.commits);
  }
  // Resuming at record ends the decoder reported.
  for (size_t i = 0; i < full.commits.size(); i += 7) {
    const Lsn from = full.commits[i].end_lsn;
    const Result r =
        Decode(s, absl::string_view(s.wal).substr(from.value() - s.start.value()), {}, from, true);
    ASSERT_TRUE(r.status.ok()) << from.ToString() << ": " << r.status;
    EXPECT_EQ(r.commits.size(), full.commits.size() - i - 1);
    ExpectCommitSuffix(r.commits, full.commits);
  }
}

TEST(WalDecoderSampleTest, DamageIsDataLoss) {
  const WalSample s = LoadSample();
  ASSERT_EQ(s.wal.size(), 2 * s.segment_bytes);
  // Bytes inside records in both segments, and a page's xlp_pageaddr.
  for (size_t at :
       {size_t{0x3001}, size_t{0x50123}, s.segment_bytes + 0x2345, size_t{0x6000 + 9}}) {
    std::string bad = s.wal;
    bad[at] ^= 0x40;
    const Result r = Decode(s, bad, {});
    EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss) << at;
    EXPECT_LT(r.records, s.records) << at;
  }
  // Another cluster's WAL.
  WalDecoder d(s.segment_bytes, s.system_id + 1);
  d.Reset(s.start, false);
  EXPECT_EQ(d.Feed(s.wal, nullptr).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace ferry::ingest::pg
