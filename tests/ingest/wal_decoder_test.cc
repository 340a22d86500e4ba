// WalDecoder against synthetic PostgreSQL 15 WAL written here byte by byte (page headers,
// records with real CRC-32C), with byte damage; real server WAL is in wal_decoder_sample_test.cc.
#include "ingest/pg/wal_decoder.h"

#include <random>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "pipeline/endian.h"

namespace ferry::ingest::pg {
namespace {

using pipeline::Lsn;
using pipeline::PutLe16;
using pipeline::PutLe32;
using pipeline::PutLe64;

constexpr uint64_t kSeg = 1 << 20;  // 1 MiB segments keep tests small
constexpr uint64_t kPage = 8192;
constexpr uint64_t kSysId = 7711713339227354403ull;
constexpr uint16_t kContRecord = 0x0001;
constexpr uint16_t kOverwriteContRecord = 0x0008;

std::string Le16(uint16_t v) {
  std::string s(2, '\0');
  PutLe16(s.data(), v);
  return s;
}
std::string Le32(uint32_t v) {
  std::string s(4, '\0');
  PutLe32(s.data(), v);
  return s;
}
std::string Le64(uint64_t v) {
  std::string s(8, '\0');
  PutLe64(s.data(), v);
  return s;
}

// The fragment header and bytes of a record's main data (XLR_BLOCK_ID_DATA_SHORT or _LONG).
std::string MainData(const std::string& main) {
  if (main.size() < 256) return std::string(1, '\xff') + static_cast<char>(main.size()) + main;
  return "\xfe" + Le32(static_cast<uint32_t>(main.size())) + main;
}

// xl_xact_commit main data: xact_time, then with `xinfo` (xl_info 0x80) the xinfo word and,
// for XACT_XINFO_HAS_DBINFO, dbId/tsId.
std::string CommitMain(int64_t pg_time, bool with_dbinfo) {
  std::string m = Le64(static_cast<uint64_t>(pg_time));
  if (with_dbinfo) m += Le32(0x01) + Le32(5) + Le32(1663);
  return m;
}

struct Rec {
  uint64_t start = 0;
  uint64_t end = 0;  // byte after the record, page headers included, not MAXALIGNed
};

// Writes WAL the way PostgreSQL lays it out (15's page magic unless told), from a segment
// boundary.
class WalWriter {
 public:
  explicit WalWriter(uint64_t start) : start_(start) {}

  uint64_t pos() const { return start_ + bytes_.size(); }
  const std::string& bytes() const { return bytes_; }
  std::string& mutable_bytes() { return bytes_; }
  uint64_t prev() const { return prev_; }
  size_t records() const { return records_; }
  void set_tli(uint32_t tli) { tli_ = tli; }
  void set_magic(uint16_t magic) { magic_ = magic; }

  // Appends a record: the 24-byte header, then `rest` (fragment headers and payloads).
  Rec Add(uint8_t rmid, uint8_t info, const std::string& rest, uint32_t xid = 0) {
    return Emit(Build(rmid, info, rest, xid, prev_), rest.size() + 24);
  }
  Rec AddMain(uint8_t rmid, uint8_t info, const std::string& main, uint32_t xid = 0) {
    return Add(rmid, info, MainData(main), xid);
  }
  Rec AddCommit(int64_t pg_time, uint32_t xid, uint8_t info = 0x80) {
    return AddMain(1, info, CommitMain(pg_time, (info & 0x80) != 0), xid);
  }
  // A record of exactly `len` bytes (at least 26).
  Rec AddSized(size_t len, uint8_t rmid = 10) {
    if (len - 26 < 256) return AddMain(rmid, 0, std::string(len - 26, 'r'));
    if (len - 29 >= 256) return AddMain(rmid, 0, std::string(len - 29, 'r'));
    return Add(rmid, 0, "\xfd" + Le16(1) + MainData(std::string(len - 29, 'r')));  // + ORIGIN
  }
  // Records such that the next one starts at `next`.
  void FillTo(uint64_t next) {
    while (true) {
      Pad();
      if (pos() % kPage == 0) Header(0);
      const uint64_t room = kPage - pos() % kPage;
      if (next < pos() + room) {
        AddSized(next - pos());
        return;
      }
      // Up to the page end, or 32 bytes past the next page header when too little is left.
      AddSized(room >= 26 ? room : room + 32);
    }
  }
  // XLOG_SWITCH; PostgreSQL 15 then zeroes the rest of the segment, page headers included.
  Rec Switch() {
    Rec r = Add(0, 0x40, "");
    while (pos() % kSeg != 0) bytes_ += '\0';
    return r;
  }
  // The first part of a `len`-byte record up to the end of its first page, or of the
  // page `pages` - 1 pages later, as flushed before a crash; the next page gets
  // XLP_FIRST_IS_OVERWRITE_CONTRECORD.
  Rec AddCutShort(size_t len, int pages = 1) {
    const std::string rec = Build(10, 0, MainData(std::string(len - 29, 'c')), 0, prev_);
    Pad();
    if (pos() % kPage == 0) Header(0);
    Rec r{pos(), 0};
    const uint64_t stop = (pos() / kPage + pages) * kPage;
    for (size_t i = 0; pos() < stop;) {
      EXPECT_LT(i, rec.size());
      if (pos() % kPage == 0) Header(static_cast<uint32_t>(rec.size() - i));
      const size_t n = std::min<size_t>(rec.size() - i, kPage - pos() % kPage);
      bytes_.append(rec, i, n);
      i += n;
    }
    next_flags_ = kOverwriteContRecord;
    return r;
  }
  Rec AddOverwrite(uint64_t aborted) { return AddMain(0, 0xD0, Le64(aborted) + Le64(0)); }
  void AppendRaw(const std::string& s) { bytes_ += s; }

  // Builds a record with its CRC. `prev` is xl_prev.
  static std::string Build(uint8_t rmid, uint8_t info, const std::string& rest, uint32_t xid,
                           uint64_t prev) {
    std::string rec(24, '\0');
    rec += rest;
    PutLe32(rec.data(), static_cast<uint32_t>(rec.size()));
    PutLe32(rec.data() + 4, xid);
    PutLe64(rec.data() + 8, prev);
    rec[16] = static_cast<char>(info);
    rec[17] = static_cast<char>(rmid);
    uint32_t crc = Crc32cExtend(0xFFFFFFFFu, rec.data() + 24, rec.size() - 24);
    crc = Crc32cExtend(crc, rec.data(), 20) ^ 0xFFFFFFFFu;
    PutLe32(rec.data() + 20, crc);
    return rec;
  }

 private:
  Rec Emit(const std::string& rec, size_t len) {
    Pad();
    if (pos() % kPage == 0) Header(0);  // a record at a page start begins after the header
    Rec r{pos(), 0};
    prev_ = r.start;
    ++records_;
    for (size_t i = 0; i < len;) {
      if (pos() % kPage == 0) Header(static_cast<uint32_t>(len - i));
      const size_t n = std::min<size_t>(len - i, kPage - pos() % kPage);
      bytes_.append(rec, i, n);
      i += n;
    }
    r.end = pos();
    return r;
  }
  void Pad() {
    while (pos() % 8 != 0) bytes_ += '\0';
  }
  void Header(uint32_t rem_len) {
    const bool is_long = pos() % kSeg == 0;
    std::string h(is_long ? 40 : 24, '\0');
    PutLe16(h.data(), magic_);
    PutLe16(h.data() + 2,
            static_cast<uint16_t>((rem_len ? kContRecord : 0) | (is_long ? 2 : 0) | next_flags_));
    PutLe32(h.data() + 4, tli_);
    PutLe64(h.data() + 8, pos());
    PutLe32(h.data() + 16, rem_len);
    if (is_long) {
      PutLe64(h.data() + 24, kSysId);
      PutLe32(h.data() + 32, static_cast<uint32_t>(kSeg));
      PutLe32(h.data() + 36, static_cast<uint32_t>(kPage));
    }
    next_flags_ = 0;
    bytes_ += h;
  }

  uint64_t start_;
  uint64_t prev_ = 0;
  uint32_t tli_ = 1;
  uint16_t magic_ = 0xD110;
  uint16_t next_flags_ = 0;
  size_t records_ = 0;
  std::string bytes_;
};

struct Sample {
  std::string wal;  // from LSN kSeg
  std::vector<Rec> records;
  std::vector<CommitInfo> commits;
};

// Records from tiny to several pages long, commits among them, over a segment boundary.
Sample MakeSample(int count, uint32_t seed = 5) {
  WalWriter w(kSeg);
  Sample s;
  std::mt19937 rng(seed);
  for (int i = 0; i < count; ++i) {
    if (i % 10 == 3) {
      const int64_t t = 832000000000000 + i;  // µs since 2000-01-01
      const uint32_t xid = 700 + i;
      const Rec r = w.AddCommit(t, xid);
      s.records.push_back(r);
      s.commits.push_back(CommitInfo{Lsn(r.end), t + pipeline::kPgEpochUnixMicros, xid});
    } else {
      const size_t n = (i % 17 == 0) ? 20000 + rng() % 5000 : rng() % 3000;
      s.records.push_back(w.AddMain(10, 0, std::string(n, static_cast<char>('a' + i % 26)), i));
    }
  }
  s.wal = w.bytes();
  return s;
}

struct Outcome {
  absl::Status status;
  uint64_t records = 0;
  Lsn position;
  Lsn last_record_end;
  std::vector<CommitInfo> commits;
};

// Feeds `wal` (which starts at `from`) in pieces of the given sizes, cycling through them.
Outcome RunDecoder(const std::string& wal, Lsn from, bool at_record_boundary,
                   const std::vector<size_t>& pieces = {}) {
  WalDecoder d(kSeg, kSysId);
  d.Reset(from, at_record_boundary);
  Outcome o;
  size_t at = 0;
  for (size_t i = 0; at < wal.size() && o.status.ok(); ++i) {
    const size_t n = pieces.empty() ? wal.size() : pieces[i % pieces.size()];
    o.status = d.Feed(absl::string_view(wal).substr(at, n), &o.commits);
    at += n;
  }
  o.records = d.records_verified();
  o.position = d.position();
  o.last_record_end = d.last_record_end();
  return o;
}

void ExpectSameCommits(const std::vector<CommitInfo>& got, const std::vector<CommitInfo>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].end_lsn, want[i].end_lsn) << i;
    EXPECT_EQ(got[i].commit_time, want[i].commit_time) << i;
    EXPECT_EQ(got[i].xid, want[i].xid) << i;
  }
}

// Bitwise CRC-32C, the definition.
uint32_t ReferenceCrc32c(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

TEST(Crc32cTest, KnownVectorAndPieces) {
  const std::string v = "123456789";
  EXPECT_EQ(Crc32cExtend(0xFFFFFFFFu, v.data(), v.size()) ^ 0xFFFFFFFFu, 0xE3069283u);
  std::mt19937 rng(3);
  for (size_t len = 0; len < 200; ++len) {
    std::string s(len + 3, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    const std::string body = s.substr(3);  // unaligned start
    const size_t cut = len ? rng() % len : 0;
    uint32_t c = Crc32cExtend(0xFFFFFFFFu, s.data() + 3, cut);
    c = Crc32cExtend(c, s.data() + 3 + cut, len - cut) ^ 0xFFFFFFFFu;
    EXPECT_EQ(c, ReferenceCrc32c(body)) << len;
  }
}

TEST(WalDecoderTest, VerifiesEveryRecordAndReportsCommits) {
  Sample s = MakeSample(800);
  ASSERT_GT(s.wal.size(), kSeg);  // crosses into a second segment (long page header)
  Outcome o = RunDecoder(s.wal, Lsn(kSeg), false);
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.records, 800u);
  EXPECT_EQ(o.position, Lsn(kSeg + s.wal.size()));
  EXPECT_EQ(o.last_record_end, Lsn(s.records.back().end));
  ExpectSameCommits(o.commits, s.commits);
}

TEST(WalDecoderTest, RecordHeaderSplitAcrossPagesAndFeeds) {
  // A record whose 24-byte header starts 8 or 16 bytes before a page end, and one that ends
  // exactly at a page end (the next page then has no XLP_FIRST_IS_CONTRECORD).
  for (uint64_t before_end : {8, 16}) {
    WalWriter w(kSeg);
    w.AddSized(100);
    w.FillTo(kSeg + 3 * kPage - before_end);
    const Rec split = w.AddCommit(42, 9);
    ASSERT_EQ(split.start, kSeg + 3 * kPage - before_end);
    w.FillTo(kSeg + 4 * kPage - 64);
    const Rec flush = w.AddSized(64);
    ASSERT_EQ(flush.end, kSeg + 4 * kPage);  // ends exactly at a page end
    const Rec last = w.AddSized(30);
    for (const std::vector<size_t>& pieces :
         std::vector<std::vector<size_t>>{{}, {1}, {3 * kPage - before_end + 5, 7, 100000}}) {
      Outcome o = RunDecoder(w.bytes(), Lsn(kSeg), false, pieces);
      ASSERT_TRUE(o.status.ok()) << o.status;
      EXPECT_EQ(o.records, w.records());
      ASSERT_EQ(o.commits.size(), 1u);
      EXPECT_EQ(o.commits[0].end_lsn, Lsn(split.end));
      EXPECT_EQ(o.commits[0].end_lsn, Lsn(kSeg + 3 * kPage + 24 + 46 - before_end));
      EXPECT_EQ(o.last_record_end, Lsn(last.end));
    }
  }
}

TEST(WalDecoderTest, ChunkingDoesNotMatter) {
  Sample s = MakeSample(250, 11);
  const Outcome whole = RunDecoder(s.wal, Lsn(kSeg), false);
  ASSERT_TRUE(whole.status.ok()) << whole.status;
  std::mt19937 rng(9);
  std::vector<size_t> random_pieces;
  for (int i = 0; i < 1000; ++i) random_pieces.push_back(1 + rng() % (rng() % 2 ? 50 : 30000));
  for (const std::vector<size_t>& pieces :
       std::vector<std::vector<size_t>>{{1}, {7}, {24}, {kPage}, {kPage - 1}, random_pieces}) {
    Outcome o = RunDecoder(s.wal, Lsn(kSeg), false, pieces);
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.records, whole.records);
    EXPECT_EQ(o.position, whole.position);
    EXPECT_EQ(o.last_record_end, whole.last_record_end);
    ExpectSameCommits(o.commits, whole.commits);
  }
  // Two feeds split at every byte of a stretch that holds page headers and record headers.
  for (size_t cut = kPage - 100; cut < 2 * kPage + 100; ++cut) {
    Outcome o = RunDecoder(s.wal, Lsn(kSeg), false, {cut, s.wal.size()});
    ASSERT_TRUE(o.status.ok()) << cut << ": " << o.status;
    ASSERT_EQ(o.records, whole.records) << cut;
    ASSERT_EQ(o.commits.size(), whole.commits.size()) << cut;
  }
}

TEST(WalDecoderTest, FlippedByteIsDataLossNamingTheRecord) {
  Sample s = MakeSample(100);
  // One byte in a small record's stored CRC, one in a multi-page record's last page, one in
  // a commit's xact_time: each is reported at the record's start, whatever the chunking.
  struct Case {
    size_t record;
    uint64_t offset_from_end;
  };
  for (const Case c : {Case{50, 0}, Case{17, 3}, Case{23, 5}}) {
    const Rec r = s.records[c.record];
    std::string bad = s.wal;
    const uint64_t at = c.offset_from_end == 0 ? r.start + 20 : r.end - c.offset_from_end;
    bad[at - kSeg] ^= 0x10;
    for (const std::vector<size_t>& pieces : std::vector<std::vector<size_t>>{{}, {1}, {333}}) {
      Outcome o = RunDecoder(bad, Lsn(kSeg), false, pieces);
      ASSERT_EQ(o.status.code(), absl::StatusCode::kDataLoss) << o.status;
      EXPECT_TRUE(absl::StartsWith(
          o.status.message(),
          absl::StrCat("wal record at ", Lsn(r.start).ToString(), ": crc mismatch (stored 0x")))
          << o.status;
      EXPECT_EQ(o.records, c.record);  // everything before it passed, nothing after
    }
  }
}

// Feeds `wal` whole and expects kDataLoss with exactly `message`.
void ExpectError(const std::string& wal, const std::string& message, Lsn from = Lsn(kSeg),
                 bool at_record_boundary = false) {
  for (const std::vector<size_t>& pieces : std::vector<std::vector<size_t>>{{}, {1}}) {
    Outcome o = RunDecoder(wal, from, at_record_boundary, pieces);
    EXPECT_EQ(o.status.code(), absl::StatusCode::kDataLoss) << o.status;
    EXPECT_EQ(std::string(o.status.message()), message);
  }
}

TEST(WalDecoderTest, BadPageHeadersAreRejected) {
  WalWriter w(kSeg);
  w.AddSized(100);
  w.FillTo(kSeg + kPage - 80);
  w.AddSized(3 * kPage);  // at 0/101FB0, continues on pages 1, 2 and 3
  w.AddSized(40);
  w.FillTo(kSeg + 5 * kPage - 64);
  ASSERT_EQ(w.AddSized(64).end, kSeg + 5 * kPage);
  w.AddSized(40);  // starts right after page 5's header
  const std::string good = w.bytes();
  ASSERT_TRUE(RunDecoder(good, Lsn(kSeg), false).status.ok());
  const uint64_t page1 = kPage;  // offsets in `good`
  const uint64_t page2 = 2 * kPage;
  auto patched = [&](uint64_t at, const std::string& bytes) {
    std::string bad = good;
    bad.replace(at, bytes.size(), bytes);
    return bad;
  };
  ExpectError(patched(page1, Le16(0xD111)),
              "wal page at 0/00102000: bad magic 0xD111 (not the WAL of PostgreSQL 14 to 18)");
  ExpectError(patched(page1, Le16(0xD118)),
              "wal page at 0/00102000: magic 0xD118 of PostgreSQL 18 after pages of PostgreSQL 15");
  ExpectError(patched(page1 + 2, Le16(kContRecord | 0x0010)),
              "wal page at 0/00102000: bad flags 0x0011");
  ExpectError(patched(page1 + 8, Le64(kSeg + 5 * kPage)),
              "wal page at 0/00102000: xlp_pageaddr is 0/0010A000");
  ExpectError(patched(page2 + 4, Le32(0)),  // timeline 1 on page 1, then 0
              "wal page at 0/00104000: timeline 0 is older than the previous page's 1");
  ExpectError(patched(page1 + 2, Le16(0)),
              "wal page at 0/00102000: lacks XLP_FIRST_IS_CONTRECORD but the record at 0/00101FB0 "
              "has 24496 bytes to come");
  ExpectError(
      patched(page2 + 16, Le32(1)),
      "wal page at 0/00104000: xlp_rem_len 1 but the record at 0/00101FB0 has 16328 bytes to come");
  ExpectError(patched(page1 + 2, Le16(kContRecord | 0x0002)),
              "wal page at 0/00102000: XLP_LONG_HEADER on a page inside a segment");
  ExpectError(patched(2, Le16(0)),
              "wal page at 0/00100000: first page of a segment lacks XLP_LONG_HEADER");
  ExpectError(patched(24, Le64(kSysId + 1)),
              absl::StrCat("wal page at 0/00100000: system identifier ", kSysId + 1, " (expected ",
                           kSysId, ")"));
  ExpectError(patched(32, Le32(2 * kSeg)),
              "wal page at 0/00100000: segment size 2097152 (expected 1048576)");
  ExpectError(patched(36, Le32(4096)), "wal page at 0/00100000: block size 4096 (expected 8192)");
  // A later page whose timeline is newer is fine (a promotion), and system id 0 skips the check.
  std::string promoted = good;
  for (uint64_t page = page2; page < good.size(); page += kPage)
    promoted.replace(page + 4, 4, Le32(2));
  EXPECT_TRUE(RunDecoder(promoted, Lsn(kSeg), false).status.ok());
  {
    WalDecoder d(kSeg, 0);
    d.Reset(Lsn(kSeg), false);
    EXPECT_TRUE(d.Feed(patched(24, Le64(kSysId + 1)), nullptr).ok());
  }
  // XLP_FIRST_IS_CONTRECORD on a page where a record starts.
  ExpectError(patched(5 * kPage + 2, Le16(kContRecord)).replace(5 * kPage + 16, 4, Le32(5)),
              "wal page at 0/0010A000: XLP_FIRST_IS_CONTRECORD (xlp_rem_len 5) but no record is in "
              "progress");
}

TEST(WalDecoderTest, BadRecordHeadersAreRejected) {
  WalWriter w(kSeg);
  w.AddSized(100);  // 0/00100028 to 0/0010008C; the next record would start at 0/00100090
  const std::string pad(4, '\0');
  ExpectError(w.bytes() + pad + std::string(64, '\0'),
              "wal record at 0/00100090: xl_tot_len is 0 where a record must start");
  ExpectError(w.bytes() + pad + Le32(10) + std::string(60, '\0'),
              "wal record at 0/00100090: invalid xl_tot_len 10");
  ExpectError(w.bytes() + pad + Le32(1u << 30) + std::string(60, '\0'),
              "wal record at 0/00100090: invalid xl_tot_len 1073741824");
  ExpectError(w.bytes() + pad + WalWriter::Build(10, 0, MainData("x"), 0, kSeg + 8),
              "wal record at 0/00100090: xl_prev 0/00100008 does not point at the previous record "
              "0/00100028");
  // Zeros after a record that only looks like XLOG_SWITCH (another resource manager).
  WalWriter v(kSeg);
  v.Add(10, 0x40, "");
  ExpectError(v.bytes() + std::string(kPage, '\0'),
              "wal record at 0/00100040: xl_tot_len is 0 where a record must start");
}

TEST(WalDecoderTest, ExtractsCommitTimes) {
  WalWriter w(kSeg);
  std::vector<CommitInfo> want;
  auto expect = [&](const Rec& r, int64_t pg_time, uint32_t xid) {
    want.push_back(CommitInfo{Lsn(r.end), pg_time + pipeline::kPgEpochUnixMicros, xid});
  };
  const int64_t t = 832000000123456;  // 2026-05-13 in µs since 2000-01-01
  // COMMIT with xinfo and dbinfo, as a one-row commit at wal_level=logical looks.
  expect(w.AddCommit(t, 735, 0x80), t, 735);
  // COMMIT without xinfo: 8 bytes of main data. Times before 2000 are negative.
  expect(w.AddCommit(1, 736, 0x00), 1, 736);
  expect(w.AddCommit(-5000000, 737, 0x00), -5000000, 737);
  // COMMIT_PREPARED: xinfo HAS_DBINFO|HAS_TWOPHASE|HAS_GID, the prepared xid, the GID.
  const std::string prepared =
      Le64(t + 1) + Le32(0x01 | 0x10 | 0x80) + Le32(5) + Le32(1663) + Le32(885) + "ferry1" + '\0';
  expect(w.AddMain(1, 0x80 | 0x30, prepared, 0), t + 1, 0);
  // Not commits: ABORT, PREPARE, ABORT_PREPARED, and another resource manager's 0x80.
  w.AddMain(1, 0x80 | 0x20, CommitMain(99, true), 740);
  w.AddMain(1, 0x10, std::string(100, 'p'), 741);
  w.AddMain(1, 0x40, CommitMain(99, false), 742);
  w.AddMain(10, 0x80, CommitMain(99, true), 743);
  // Every fragment kind before the main data: a compressed image with a hole (hole_length
  // follows), a SAME_REL block with data, an uncompressed image with a hole, ORIGIN,
  // TOPLEVEL_XID, then DATA_LONG. Over 8 kB, so the record spans pages and is reassembled.
  const std::string main = CommitMain(t + 2, true) + std::string(300, 'i');
  std::string rest;
  rest += std::string("\x00\x30", 2) + Le16(10);       // block 0: HAS_IMAGE|HAS_DATA, 10 data bytes
  rest += Le16(100) + Le16(200) + '\x05' + Le16(300);  // image: 100 bytes, HAS_HOLE|PGLZ
  rest += Le32(1663) + Le32(5) + Le32(16384) + Le32(7);    // RelFileNode, block number
  rest += std::string("\x01\xa0", 2) + Le16(3) + Le32(8);  // block 1: HAS_DATA|SAME_REL
  rest += std::string("\x02\x10", 2) + Le16(0);            // block 2: HAS_IMAGE
  rest += Le16(8000) + Le16(100) + '\x03';  // uncompressed image with a hole: no hole_length
  rest += Le32(1663) + Le32(5) + Le32(16385) + Le32(0);
  rest += '\xfd' + Le16(7);                                   // XLR_BLOCK_ID_ORIGIN
  rest += '\xfc' + Le32(733);                                 // XLR_BLOCK_ID_TOPLEVEL_XID
  rest += '\xfe' + Le32(static_cast<uint32_t>(main.size()));  // XLR_BLOCK_ID_DATA_LONG
  rest +=
      std::string(100, 'I') + std::string(10, 'd') + std::string(3, 'd') + std::string(8000, 'I');
  rest += main;
  expect(w.Add(1, 0x80, rest, 738), t + 2, 738);
  for (const std::vector<size_t>& pieces : std::vector<std::vector<size_t>>{{}, {1}, {50}}) {
    Outcome o = RunDecoder(w.bytes(), Lsn(kSeg), false, pieces);
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.records, 9u);
    ExpectSameCommits(o.commits, want);
    EXPECT_EQ(o.last_record_end, want.back().end_lsn);
  }
  {
    WalDecoder d(kSeg, kSysId);  // commits are optional
    d.Reset(Lsn(kSeg), false);
    ASSERT_TRUE(d.Feed(w.bytes(), nullptr).ok());
    EXPECT_EQ(d.records_verified(), 9u);
  }
}

TEST(WalDecoderTest, MalformedCommitIsDataLoss) {
  // The CRC is right, but the contents are not a commit PostgreSQL could have written.
  WalWriter base(kSeg);
  base.AddSized(100);
  const std::string at = "wal record at 0/00100090: commit record";
  auto with = [&](const std::string& rest) {
    WalWriter w = base;
    w.Add(1, 0x80, rest, 5);
    return w.bytes();
  };
  ExpectError(with(MainData(CommitMain(1, true)) + "extra"),
              at + ": record headers account for 46 bytes, xl_tot_len is 51");
  ExpectError(with(MainData("abcd")), at + " has 4 bytes of main data");
  ExpectError(with("\x40" + MainData(CommitMain(1, true))),
              at + ": malformed fragment id 64 at record offset 24");
  ExpectError(with(std::string("\x00\x10\x00", 3)),
              at + ": malformed block header at record offset 24");
}

TEST(WalDecoderTest, SwitchSkipsTheZeroedRestOfTheSegment) {
  WalWriter w(kSeg);
  w.AddSized(100);
  const Rec sw = w.Switch();
  ASSERT_EQ(w.pos(), 2 * kSeg);
  w.AddSized(5000);  // after the next segment's long header; xl_prev is the switch
  const Rec commit = w.AddCommit(77, 12);
  for (const std::vector<size_t>& pieces :
       std::vector<std::vector<size_t>>{{}, {1}, {kPage}, {3001}}) {
    Outcome o = RunDecoder(w.bytes(), Lsn(kSeg), false, pieces);
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.records, 4u);
    ASSERT_EQ(o.commits.size(), 1u);
    EXPECT_EQ(o.commits[0].end_lsn, Lsn(commit.end));
  }
  // last_record_end() is the switch record's own end until the filler is in, then the
  // segment end, from where decoding can resume as from any record end.
  WalDecoder d(kSeg, kSysId);
  d.Reset(Lsn(kSeg), false);
  const absl::string_view all = w.bytes();
  ASSERT_TRUE(d.Feed(all.substr(0, sw.end - kSeg), nullptr).ok());
  EXPECT_EQ(d.last_record_end(), Lsn(sw.end));
  ASSERT_TRUE(d.Feed(all.substr(sw.end - kSeg, kSeg - (sw.end - kSeg) - 1), nullptr).ok());
  EXPECT_EQ(d.last_record_end(), Lsn(sw.end));
  ASSERT_TRUE(d.Feed(all.substr(kSeg - 1, 1), nullptr).ok());
  EXPECT_EQ(d.last_record_end(), Lsn(2 * kSeg));
  Outcome resumed = RunDecoder(std::string(all.substr(kSeg)), Lsn(2 * kSeg), true);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status;
  EXPECT_EQ(resumed.records, 2u);
  // Resynchronising inside the filler: the zero page headers lead to the next segment.
  for (uint64_t from : {sw.end + 5, kSeg + 3 * kPage, kSeg + 3 * kPage + 7}) {
    Outcome o = RunDecoder(std::string(all.substr(from - kSeg)), Lsn(from), false, {1000});
    ASSERT_TRUE(o.status.ok()) << Lsn(from).ToString() << ": " << o.status;
    EXPECT_EQ(o.records, 2u);
    EXPECT_EQ(o.commits.size(), 1u);
  }
}

TEST(WalDecoderTest, ResyncSkipsTheContinuationOfAnEarlierRecord) {
  Sample s = MakeSample(300);
  for (size_t big : {17, 34, 51}) {  // 20 kB records: their continuation spans pages
    const Rec r = s.records[big];
    const uint64_t next_page = (r.start / kPage + 1) * kPage;
    ASSERT_GT(r.end, next_page + kPage + 100);
    for (uint64_t from : {r.start + 100, next_page, next_page + 5, next_page + kPage - 1}) {
      const uint64_t first_page = (from + kPage - 1) / kPage * kPage;
      uint64_t expected = 0;
      std::vector<CommitInfo> commits;
      for (const Rec& x : s.records) expected += x.start >= first_page;
      for (const CommitInfo& c : s.commits) {
        if (c.end_lsn.value() > first_page + 64) commits.push_back(c);
      }
      for (const std::vector<size_t>& pieces : std::vector<std::vector<size_t>>{{}, {1}, {4099}}) {
        Outcome o = RunDecoder(s.wal.substr(from - kSeg), Lsn(from), false, pieces);
        ASSERT_TRUE(o.status.ok()) << Lsn(from).ToString() << ": " << o.status;
        EXPECT_EQ(o.records, expected) << Lsn(from).ToString();
        ExpectSameCommits(o.commits, commits);
        EXPECT_EQ(o.last_record_end, Lsn(s.records.back().end));
      }
    }
  }
  // The continuation pages are checked while skipping.
  const Rec r = s.records[17];
  const uint64_t page2 = (r.start / kPage + 2) * kPage;  // the record's second continuation page
  const uint32_t rem_len = pipeline::GetLe32(s.wal.data() + (page2 - kSeg) + 16);
  ASSERT_GT(rem_len, 0u);
  const uint64_t from = r.start + 100;
  std::string bad = s.wal.substr(from - kSeg);
  bad.replace(page2 - from + 16, 4, Le32(rem_len + 8));
  ExpectError(bad,
              absl::StrCat("wal page at ", Lsn(page2).ToString(), ": xlp_rem_len ", rem_len + 8,
                           " (expected ", rem_len, ")"),
              Lsn(from));
  bad = s.wal.substr(from - kSeg);
  bad.replace(page2 - from + 2, 2, Le16(0));
  ExpectError(
      bad,
      absl::StrCat("wal page at ", Lsn(page2).ToString(), ": lacks XLP_FIRST_IS_CONTRECORD; ",
                   rem_len, " bytes of a record are still to come"),
      Lsn(from));
}

TEST(WalDecoderTest, ResetAtARecordEnd) {
  Sample s = MakeSample(200);
  for (size_t k : {0, 5, 16, 17, 40, 123}) {
    const uint64_t end = s.records[k].end;  // not MAXALIGNed: the padding is skipped
    std::vector<CommitInfo> commits;
    for (const CommitInfo& c : s.commits) {
      if (c.end_lsn.value() > end) commits.push_back(c);
    }
    for (const std::vector<size_t>& pieces : std::vector<std::vector<size_t>>{{}, {1}}) {
      Outcome o = RunDecoder(s.wal.substr(end - kSeg), Lsn(end), true, pieces);
      ASSERT_TRUE(o.status.ok()) << Lsn(end).ToString() << ": " << o.status;
      EXPECT_EQ(o.records, s.records.size() - k - 1);
      ExpectSameCommits(o.commits, commits);
    }
  }
  // After an error, a Reset to the last good record end makes the decoder usable again.
  WalDecoder d(kSeg, kSysId);
  d.Reset(Lsn(kSeg), false);
  std::string bad = s.wal;
  bad[s.records[30].end - kSeg - 1] ^= 1;
  EXPECT_EQ(d.Feed(bad, nullptr).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(d.last_record_end(), Lsn(s.records[29].end));
  d.Reset(d.last_record_end(), true);
  EXPECT_TRUE(d.Feed(absl::string_view(s.wal).substr(s.records[29].end - kSeg), nullptr).ok());
  EXPECT_EQ(d.last_record_end(), Lsn(s.records.back().end));
}

TEST(WalDecoderTest, OverwrittenContinuationAfterACrash) {
  // The primary flushed the first part of a record and crashed; recovery wrote
  // XLOG_OVERWRITE_CONTRECORD on the next page, flagged XLP_FIRST_IS_OVERWRITE_CONTRECORD.
  WalWriter base(kSeg);
  base.AddSized(100);
  base.FillTo(kSeg + 2 * kPage - 200);
  WalWriter w = base;
  const Rec cut = w.AddCutShort(1000);
  w.AddOverwrite(cut.start);  // xl_prev: the last complete record
  const Rec commit = w.AddCommit(5, 6);
  for (const std::vector<size_t>& pieces : std::vector<std::vector<size_t>>{{}, {1}}) {
    Outcome o = RunDecoder(w.bytes(), Lsn(kSeg), false, pieces);
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(o.records, w.records());  // all but the one cut short
    ASSERT_EQ(o.commits.size(), 1u);
    EXPECT_EQ(o.commits[0].end_lsn, Lsn(commit.end));
  }
  // Resynchronising inside the record that was cut short, on its first page (the next page
  // starts with the overwrite record) or before a continuation page (skipped first).
  Outcome o = RunDecoder(w.bytes().substr(cut.start + 50 - kSeg), Lsn(cut.start + 50), false);
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.records, 2u);
  WalWriter u = base;
  const Rec long_cut = u.AddCutShort(20000, 2);
  u.AddOverwrite(long_cut.start);
  u.AddCommit(5, 6);
  ASSERT_TRUE(RunDecoder(u.bytes(), Lsn(kSeg), false).status.ok());
  o = RunDecoder(u.bytes().substr(long_cut.start + 50 - kSeg), Lsn(long_cut.start + 50), false,
                 {1});
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.records, 2u);
  EXPECT_EQ(o.commits.size(), 1u);
  // The overwrite record must name the record that was cut short.
  WalWriter v = base;
  v.AddCutShort(1000);
  v.AddOverwrite(cut.start + 8);
  ExpectError(v.bytes(), absl::StrCat("wal record at ", Lsn(kSeg + 2 * kPage + 24).ToString(),
                                      ": expected XLOG_OVERWRITE_CONTRECORD for the record cut "
                                      "short at ",
                                      Lsn(cut.start).ToString()));
}

// The WAL of every supported major, told apart by its page magic (14 0xD10D, 15 0xD110,
// 16 0xD113, 17 0xD116, 18 0xD118, as their servers write it).
TEST(WalDecoderTest, ReadsTheWalOfEverySupportedMajor) {
  const std::vector<std::pair<int, uint16_t>> majors = {
      {14, 0xD10D}, {15, 0xD110}, {16, 0xD113}, {17, 0xD116}, {18, 0xD118}};
  for (const auto& [major, magic] : majors) {
    WalWriter w(kSeg);
    w.set_magic(magic);
    for (int i = 0; i < 40; ++i) w.AddSized(100 + 97 * i);
    WalDecoder d(kSeg, kSysId);
    d.Reset(Lsn(kSeg), false);
    ASSERT_TRUE(d.Feed(w.bytes(), nullptr).ok()) << "PostgreSQL " << major;
    EXPECT_EQ(d.records_verified(), 40u);
    EXPECT_EQ(d.major_version(), major);

    // Told the server's major, it accepts only that major's pages.
    WalDecoder expecting(kSeg, kSysId);
    ASSERT_TRUE(expecting.ExpectMajor(major == 18 ? 17 : 18));
    expecting.Reset(Lsn(kSeg), false);
    EXPECT_EQ(expecting.Feed(w.bytes(), nullptr).code(), absl::StatusCode::kDataLoss) << "PostgreSQL " << major;
  }
  WalDecoder d(kSeg, kSysId);
  EXPECT_FALSE(d.ExpectMajor(13));
  EXPECT_FALSE(d.ExpectMajor(19));
}

// A full-page image's bimg_info says "compressed" (a hole_length follows its header) with
// 0x02 on 14 and with 0x04, 0x08 or 0x10 on 15 and later, where 0x02 is BKPIMAGE_APPLY. The
// decoder walks the fragment headers of the records it reads (commits), so a commit carrying
// a block image shows which layout it used.
TEST(WalDecoderTest, CompressedImageBitsFollowTheMajor) {
  const std::string main = CommitMain(832000000000000, false);
  // Block 0 with a 40-byte image (hole at 100), same relation, block number 7; then the
  // commit's main data.
  auto commit = [&](uint8_t bimg_info, bool hole_length) {
    std::string rest = std::string("\x00", 1) + std::string(1, static_cast<char>(0x10 | 0x80)) + Le16(0);
    rest += Le16(40) + Le16(100) + std::string(1, static_cast<char>(bimg_info));
    if (hole_length) rest += Le16(8152);
    rest += Le32(7);
    rest += std::string("\xff", 1) + std::string(1, static_cast<char>(main.size()));
    return rest + std::string(40, 'i') + main;
  };
  struct Case {
    uint16_t magic;
    uint8_t bimg_info;
    bool hole_length;
  };
  // 14: HAS_HOLE | IS_COMPRESSED; 15: HAS_HOLE | APPLY, then HAS_HOLE | COMPRESS_LZ4.
  for (const Case& c : {Case{0xD10D, 0x03, true}, Case{0xD110, 0x03, false}, Case{0xD110, 0x09, true}}) {
    WalWriter w(kSeg);
    w.set_magic(c.magic);
    w.AddSized(100);
    w.Add(1, 0x00, commit(c.bimg_info, c.hole_length), 700);
    w.AddSized(100);
    const Outcome o = RunDecoder(w.bytes(), Lsn(kSeg), false);
    EXPECT_TRUE(o.status.ok()) << std::hex << c.magic << " " << int{c.bimg_info} << ": " << o.status;
    EXPECT_EQ(o.records, 3u);
    EXPECT_EQ(o.commits.size(), 1u);
  }
  // 14's compressed image in WAL with 15's magic: the lengths no longer add up.
  WalWriter w(kSeg);
  w.AddSized(100);
  w.Add(1, 0x00, commit(0x03, true), 700);
  const Outcome o = RunDecoder(w.bytes(), Lsn(kSeg), false);
  EXPECT_EQ(o.status.code(), absl::StatusCode::kDataLoss) << o.status;
}

}  // namespace
}  // namespace ferry::ingest::pg
