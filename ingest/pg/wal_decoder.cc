// WalDecoder: page headers, record framing, CRC-32C and commit times of the WAL of PostgreSQL 14 to 18.
// Layouts: access/xlog_internal.h, access/xlogrecord.h, access/xact.h (docs/protocols.md,
// "WAL on disk").
#include "ingest/pg/wal_decoder.h"

#include <nmmintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "pipeline/endian.h"

namespace ferry::ingest::pg {
namespace {

using pipeline::GetLe16;
using pipeline::GetLe32;
using pipeline::GetLe64;
using pipeline::Lsn;

constexpr uint64_t kPageBytes = 8192;   // XLOG_BLCKSZ
constexpr size_t kShortHeader = 24;     // SizeOfXLogShortPHD
constexpr size_t kLongHeader = 40;      // SizeOfXLogLongPHD
constexpr uint32_t kRecordHeader = 24;  // SizeOfXLogRecord
constexpr size_t kCrcOffset = 20;       // xl_crc; the CRC covers the header bytes before it
constexpr uint32_t kMaxRecordBytes = 1u << 30;

constexpr uint16_t kFirstIsContRecord = 0x0001;
constexpr uint16_t kLongHeaderFlag = 0x0002;
constexpr uint16_t kFirstIsOverwriteContRecord = 0x0008;
constexpr uint16_t kAllPageFlags = 0x000F;

constexpr uint8_t kRmXlog = 0;
constexpr uint8_t kRmXact = 1;
constexpr uint8_t kXlogSwitch = 0x40;
constexpr uint8_t kXlogOverwriteContRecord = 0xD0;
constexpr uint8_t kXactOpMask = 0x70;
constexpr uint8_t kXactCommit = 0x00;
constexpr uint8_t kXactCommitPrepared = 0x30;

uint64_t MaxAlign(uint64_t v) { return (v + 7) & ~uint64_t{7}; }

}  // namespace

// What differs between the WAL of the supported majors (access/xlog_internal.h,
// xlogrecord.h): the page magic each bumps, and the bimg_info bits that say a full-page image
// is compressed (then a hole_length follows its header): 14's BKPIMAGE_IS_COMPRESSED, 15's
// COMPRESS_PGLZ, _LZ4 and _ZSTD (docs/protocols.md, "WAL on disk").
struct WalVersion {
  uint16_t magic;
  int major;
  uint8_t compressed_image_bits;
};

namespace {

constexpr WalVersion kWalVersions[] = {
    {0xD10D, 14, 0x02}, {0xD110, 15, 0x1C}, {0xD113, 16, 0x1C}, {0xD116, 17, 0x1C}, {0xD118, 18, 0x1C},
};

const WalVersion* WalVersionOf(uint16_t magic) {
  for (const WalVersion& v : kWalVersions) {
    if (v.magic == magic) return &v;
  }
  return nullptr;
}

absl::Status PageError(Lsn page, absl::string_view reason) {
  return absl::DataLossError(absl::StrCat("wal page at ", page.ToString(), ": ", reason));
}

absl::Status RecordError(Lsn record, absl::string_view reason) {
  return absl::DataLossError(absl::StrCat("wal record at ", record.ToString(), ": ", reason));
}

// ---- CRC-32C ----

constexpr std::array<std::array<uint32_t, 256>, 8> MakeCrcTables() {
  std::array<std::array<uint32_t, 256>, 8> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[0][i] = c;
  }
  for (int k = 1; k < 8; ++k) {
    for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
  }
  return t;
}

constexpr auto kCrcTables = MakeCrcTables();

// Slicing-by-8, for CPUs without SSE4.2.
uint32_t Crc32cSoftware(uint32_t crc, const uint8_t* p, size_t n) {
  const auto& t = kCrcTables;
  while (n >= 8) {
    uint32_t lo;
    uint32_t hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = t[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return crc;
}

__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(uint32_t crc, const uint8_t* p,
                                                          size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

// ---- record contents ----

// The main data of a record whose bytes after the 24-byte header are `body`: walks the
// fragment headers (xlogrecord.h; docs/protocols.md, "WAL on disk"), checks that
// headers plus payloads add up to the record length, as PostgreSQL's DecodeXLogRecord does,
// and returns the last bytes.
absl::Status MainData(absl::string_view body, const WalVersion& version, absl::string_view* main) {
  size_t at = 0;
  uint64_t payload = 0;  // block images + block data + main data
  uint32_t main_len = 0;
  auto need = [&](size_t n) { return body.size() - at >= n; };
  const char* b = body.data();
  auto malformed = [&](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("malformed ", what, " at record offset ", kRecordHeader + at));
  };
  while (need(1)) {
    const uint8_t id = static_cast<uint8_t>(b[at]);
    if (id == 255) {  // XLR_BLOCK_ID_DATA_SHORT, always the last header
      if (!need(2)) return malformed("main data header");
      main_len = static_cast<uint8_t>(b[at + 1]);
      at += 2;
      break;
    }
    if (id == 254) {  // XLR_BLOCK_ID_DATA_LONG
      if (!need(5)) return malformed("main data header");
      main_len = GetLe32(b + at + 1);
      at += 5;
      break;
    }
    if (id == 253) {  // XLR_BLOCK_ID_ORIGIN: u16
      if (!need(3)) return malformed("origin header");
      at += 3;
    } else if (id == 252) {  // XLR_BLOCK_ID_TOPLEVEL_XID: u32
      if (!need(5)) return malformed("top-level xid header");
      at += 5;
    } else if (id <= 32) {  // block reference: id, fork_flags, data_length u16
      if (!need(4)) return malformed("block header");
      const uint8_t fork_flags = static_cast<uint8_t>(b[at + 1]);
      payload += GetLe16(b + at + 2);
      at += 4;
      if (fork_flags & 0x10) {  // BKPBLOCK_HAS_IMAGE: length u16, hole_offset u16, bimg_info u8
        if (!need(5)) return malformed("block image header");
        payload += GetLe16(b + at);
        const uint8_t bimg_info = static_cast<uint8_t>(b[at + 4]);
        at += 5;
        // BKPIMAGE_HAS_HOLE is 0x01 on every major; the compression bits differ.
        if ((bimg_info & 0x01) && (bimg_info & version.compressed_image_bits)) {
          if (!need(2)) return malformed("block image header");
          at += 2;  // hole_length of a compressed image
        }
      }
      const size_t rest = (fork_flags & 0x80) ? 4 : 16;  // RelFileNode unless SAME_REL, block
      if (!need(rest)) return malformed("block header");
      at += rest;
    } else {
      return malformed(absl::StrCat("fragment id ", id));
    }
  }
  payload += main_len;
  if (payload != body.size() - at) {
    return absl::DataLossError(absl::StrCat("record headers account for ",
                                            kRecordHeader + at + payload, " bytes, xl_tot_len is ",
                                            kRecordHeader + body.size()));
  }
  *main = body.substr(body.size() - main_len);
  return absl::OkStatus();
}

bool IsCommit(uint8_t rmid, uint8_t info) {
  const uint8_t op = info & kXactOpMask;
  return rmid == kRmXact && (op == kXactCommit || op == kXactCommitPrepared);
}

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t len) {
  static const bool hardware = __builtin_cpu_supports("sse4.2");
  const auto* p = static_cast<const uint8_t*>(data);
  return hardware ? Crc32cHardware(crc, p, len) : Crc32cSoftware(crc, p, len);
}

WalDecoder::WalDecoder(uint64_t segment_bytes, uint64_t system_id)
    : segment_bytes_(segment_bytes), system_id_(system_id) {}

void WalDecoder::Reset(Lsn lsn, bool at_record_boundary) {
  position_ = lsn;
  mode_ = at_record_boundary ? Mode::kRecord : Mode::kSync;
  // A record end reported by this decoder is not MAXALIGNed; the next record starts at the
  // aligned position (padding never crosses a page boundary: pages are 8-aligned).
  skip_ = at_record_boundary ? MaxAlign(lsn.value()) - lsn.value() : 0;
  last_page_tli_ = 0;
  prev_record_start_ = Lsn();
  aborted_record_start_ = Lsn();
  ClearRecord();
}

void WalDecoder::ClearRecord() {
  header_have_ = 0;
  record_len_ = 0;
  record_have_ = 0;
  keep_body_ = false;
  body_.clear();
}

size_t WalDecoder::PageHeaderSize(uint64_t page_start) const {
  return (page_start & (segment_bytes_ - 1)) == 0 ? kLongHeader : kShortHeader;
}

absl::Status WalDecoder::Feed(absl::string_view bytes, std::vector<CommitInfo>* commits) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  while (n > 0) {
    const uint64_t pos = position_.value();
    const uint64_t in_page = pos & (kPageBytes - 1);
    size_t used = 0;
    if (mode_ == Mode::kSkipSwitch) {
      // PostgreSQL zeroes the rest of the segment after XLOG_SWITCH, page headers too
      // (xlog.c, CopyXLogRecordToWAL), so there is nothing to check until the next segment.
      const uint64_t seg_end = (pos | (segment_bytes_ - 1)) + 1;
      used = static_cast<size_t>(std::min<uint64_t>(n, seg_end - pos));
      if (pos + used == seg_end) {
        if (prev_record_start_.valid()) {
          // Like PostgreSQL's xlogreader, count the switch record as reaching the segment end,
          // so that Reset(last_record_end(), true) resumes at the next record.
          last_record_end_ = Lsn(seg_end);
          mode_ = Mode::kRecord;
        } else {
          mode_ = Mode::kSync;  // the filler was found while resynchronising
        }
      }
    } else if (mode_ == Mode::kSync && in_page != 0) {
      used = static_cast<size_t>(std::min<uint64_t>(n, kPageBytes - in_page));
    } else if (const size_t header_size = PageHeaderSize(pos - in_page); in_page < header_size) {
      if (mode_ == Mode::kSync) mode_ = Mode::kSyncHeader;
      used = static_cast<size_t>(std::min<uint64_t>(n, header_size - in_page));
      std::memcpy(page_header_ + in_page, p, used);
      if (in_page + used == header_size) {
        position_ = Lsn(pos + used);  // errors below name the page, not this position
        absl::Status s = OnPageHeader(pos - in_page);
        if (!s.ok()) return s;
      }
    } else {
      const size_t avail = static_cast<size_t>(std::min<uint64_t>(n, kPageBytes - in_page));
      if (mode_ == Mode::kSkipCont || skip_ > 0) {
        used = static_cast<size_t>(std::min<uint64_t>(avail, skip_));
        skip_ -= used;
        if (skip_ == 0 && mode_ == Mode::kSkipCont) {
          mode_ = Mode::kRecord;
          skip_ = MaxAlign(pos + used) - (pos + used);
        }
      } else {
        absl::Status s = RecordBytes(p, avail, &used, commits);
        if (!s.ok()) return s;
      }
    }
    p += used;
    n -= used;
    position_ = Lsn(pos + used);
  }
  return absl::OkStatus();
}

absl::Status WalDecoder::RecordBytes(const char* p, size_t n, size_t* used,
                                     std::vector<CommitInfo>* commits) {
  const uint64_t pos = position_.value();
  if (header_have_ == 0) {
    record_start_ = position_;
    // Fast path: the whole record is on this page and in this chunk. Check it in place.
    if (n >= kRecordHeader) {
      const uint32_t len = GetLe32(p);
      if (len >= kRecordHeader && len <= n) {
        absl::Status s = CheckRecordHeader(p);
        if (!s.ok()) return s;
        const uint32_t crc = Crc32cExtend(0xFFFFFFFFu, p + kRecordHeader, len - kRecordHeader);
        *used = len;
        position_ = Lsn(pos + len);  // the record's end, for OnRecordComplete
        return OnRecordComplete(p, crc, absl::string_view(p + kRecordHeader, len - kRecordHeader),
                                commits);
      }
    }
  }
  if (header_have_ < kRecordHeader) {
    // The header arrives in pieces (chunk or page boundary): collect it.
    const size_t take = std::min<size_t>(n, kRecordHeader - header_have_);
    std::memcpy(record_header_ + header_have_, p, take);
    header_have_ += static_cast<uint32_t>(take);
    record_have_ += static_cast<uint32_t>(take);
    *used = take;
    if (record_len_ == 0 && header_have_ >= 4) {
      record_len_ = GetLe32(record_header_);
      absl::Status s = CheckRecordLength(record_len_);
      if (!s.ok()) return s;
    }
    if (header_have_ < kRecordHeader) return absl::OkStatus();
    absl::Status s = CheckRecordHeader(record_header_);
    if (!s.ok()) return s;
    body_crc_ = 0xFFFFFFFFu;
    const uint8_t info = static_cast<uint8_t>(record_header_[16]);
    const uint8_t rmid = static_cast<uint8_t>(record_header_[17]);
    keep_body_ = IsCommit(rmid, info) || aborted_record_start_.valid();
    if (record_have_ < record_len_) return absl::OkStatus();
    position_ = Lsn(pos + take);
    return OnRecordComplete(record_header_, body_crc_, absl::string_view(), commits);
  }
  // The body: checksummed in place; copied only when needed and arriving in pieces.
  const size_t take = std::min<size_t>(n, record_len_ - record_have_);
  body_crc_ = Crc32cExtend(body_crc_, p, take);
  record_have_ += static_cast<uint32_t>(take);
  *used = take;
  const bool done = record_have_ == record_len_;
  absl::string_view body;
  if (keep_body_) {
    if (done && body_.empty()) {
      body = absl::string_view(p, take);  // the body came in one piece
    } else {
      if (body_.empty()) body_.reserve(record_len_ - kRecordHeader);
      body_.append(p, take);
      body = body_;
    }
  }
  if (!done) return absl::OkStatus();
  position_ = Lsn(pos + take);
  return OnRecordComplete(record_header_, body_crc_, body, commits);
}

absl::Status WalDecoder::CheckRecordLength(uint32_t len) const {
  if (len == 0) {
    // The stream carries only flushed WAL, and the only zeros PostgreSQL writes where a record
    // could start are after XLOG_SWITCH (handled before we get here).
    return RecordError(record_start_, "xl_tot_len is 0 where a record must start");
  }
  if (len < kRecordHeader || len >= kMaxRecordBytes) {
    return RecordError(record_start_, absl::StrCat("invalid xl_tot_len ", len));
  }
  return absl::OkStatus();
}

absl::Status WalDecoder::CheckRecordHeader(const char* header) const {
  absl::Status s = CheckRecordLength(GetLe32(header));
  if (!s.ok()) return s;
  const uint64_t xl_prev = GetLe64(header + 8);
  if (prev_record_start_.valid() && xl_prev != prev_record_start_.value()) {
    return RecordError(record_start_, absl::StrCat("xl_prev ", Lsn(xl_prev).ToString(),
                                                   " does not point at the previous record ",
                                                   prev_record_start_.ToString()));
  }
  return absl::OkStatus();
}

// position_ is the record's end. body is empty unless the record's contents are needed.
absl::Status WalDecoder::OnRecordComplete(const char* header, uint32_t body_crc,
                                          absl::string_view body,
                                          std::vector<CommitInfo>* commits) {
  const uint32_t crc = Crc32cExtend(body_crc, header, kCrcOffset) ^ 0xFFFFFFFFu;
  const uint32_t stored = GetLe32(header + kCrcOffset);
  if (crc != stored) {
    return RecordError(
        record_start_,
        absl::StrFormat("crc mismatch (stored 0x%08X, computed 0x%08X)", stored, crc));
  }
  const uint8_t info = static_cast<uint8_t>(header[16]);
  const uint8_t rmid = static_cast<uint8_t>(header[17]);
  if (aborted_record_start_.valid()) {
    // PostgreSQL writes this record where the lost continuation would have been, naming the
    // record that was cut short (xlogrecovery.c checks the same).
    absl::string_view main;
    absl::Status s = MainData(body, layout(), &main);
    if (!s.ok()) return RecordError(record_start_, s.message());
    if (rmid != kRmXlog || (info & 0xF0) != kXlogOverwriteContRecord || main.size() < 8 ||
        GetLe64(main.data()) != aborted_record_start_.value()) {
      return RecordError(
          record_start_,
          absl::StrCat("expected XLOG_OVERWRITE_CONTRECORD for the record cut short at ",
                       aborted_record_start_.ToString()));
    }
    aborted_record_start_ = Lsn();
  }
  if (IsCommit(rmid, info)) {
    absl::string_view main;
    absl::Status s = MainData(body, layout(), &main);
    if (!s.ok()) return RecordError(record_start_, absl::StrCat("commit record: ", s.message()));
    if (main.size() < 8) {
      return RecordError(record_start_,
                         absl::StrCat("commit record has ", main.size(), " bytes of main data"));
    }
    if (commits != nullptr) {
      const auto xact_time = static_cast<int64_t>(GetLe64(main.data()));
      commits->push_back(
          CommitInfo{position_, pipeline::PgTimeToUnixMicros(xact_time), GetLe32(header + 4)});
    }
  }
  ++records_verified_;
  last_record_end_ = position_;
  prev_record_start_ = record_start_;
  ClearRecord();
  const uint64_t end = position_.value();
  if (rmid == kRmXlog && (info & 0xF0) == kXlogSwitch && (end & (segment_bytes_ - 1)) != 0) {
    mode_ = Mode::kSkipSwitch;
  } else {
    skip_ = MaxAlign(end) - end;
  }
  return absl::OkStatus();
}

absl::Status WalDecoder::OnPageHeader(uint64_t page_start) {
  const Lsn page(page_start);
  const bool is_long = (page_start & (segment_bytes_ - 1)) == 0;
  if (mode_ == Mode::kSyncHeader && !is_long &&
      std::all_of(page_header_, page_header_ + kShortHeader, [](char c) { return c == 0; })) {
    // Resynchronising inside the zero filler after an XLOG_SWITCH (see kSkipSwitch).
    mode_ = Mode::kSkipSwitch;
    return absl::OkStatus();
  }
  absl::Status s = CheckPageHeader(page, is_long);
  if (!s.ok()) return s;
  last_page_tli_ = GetLe32(page_header_ + 4);
  version_ = WalVersionOf(GetLe16(page_header_));  // CheckPageHeader accepted it

  const uint16_t info = GetLe16(page_header_ + 2);
  const uint32_t rem_len = GetLe32(page_header_ + 16);
  const bool cont = (info & kFirstIsContRecord) != 0;
  const bool overwrite = (info & kFirstIsOverwriteContRecord) != 0;
  if (cont && rem_len == 0) return PageError(page, "XLP_FIRST_IS_CONTRECORD with xlp_rem_len 0");
  switch (mode_) {
    case Mode::kSyncHeader:
      mode_ = cont ? Mode::kSkipCont : Mode::kRecord;
      skip_ = cont ? rem_len : 0;
      return absl::OkStatus();
    case Mode::kSkipCont:
      return OnPageWhileSkipping(page, cont, overwrite, rem_len);
    case Mode::kRecord:
      break;
    case Mode::kSync:
    case Mode::kSkipSwitch:
      return absl::OkStatus();  // not reached: Feed reads no headers in these modes
  }
  return OnPageInRecords(page, cont, overwrite, rem_len);
}

bool WalDecoder::ExpectMajor(int major) {
  for (const WalVersion& v : kWalVersions) {
    if (v.major == major) {
      version_ = &v;
      return true;
    }
  }
  return false;
}

int WalDecoder::major_version() const { return version_ == nullptr ? 0 : version_->major; }

// Before the first page header (a decoder started mid-page) and without ExpectMajor: 15's
// layout, which 16 to 18 share.
const WalVersion& WalDecoder::layout() const { return version_ != nullptr ? *version_ : kWalVersions[1]; }

absl::Status WalDecoder::CheckPageHeader(Lsn page, bool is_long) const {
  const uint16_t magic = GetLe16(page_header_);
  const uint16_t info = GetLe16(page_header_ + 2);
  const uint32_t tli = GetLe32(page_header_ + 4);
  const uint64_t pageaddr = GetLe64(page_header_ + 8);
  const WalVersion* version = WalVersionOf(magic);
  if (version == nullptr) {
    return PageError(page, absl::StrFormat("bad magic 0x%04X (not the WAL of PostgreSQL 14 to 18)", magic));
  }
  if (version_ != nullptr && version != version_) {
    return PageError(page, absl::StrFormat("magic 0x%04X of PostgreSQL %d after pages of PostgreSQL %d", magic,
                                           version->major, version_->major));
  }
  if ((info & ~kAllPageFlags) != 0)
    return PageError(page, absl::StrFormat("bad flags 0x%04X", info));
  if (((info & kLongHeaderFlag) != 0) != is_long) {
    return PageError(page, is_long ? "first page of a segment lacks XLP_LONG_HEADER"
                                   : "XLP_LONG_HEADER on a page inside a segment");
  }
  if (pageaddr != page.value()) {
    return PageError(page, absl::StrCat("xlp_pageaddr is ", Lsn(pageaddr).ToString()));
  }
  if (tli < last_page_tli_) {
    return PageError(page, absl::StrCat("timeline ", tli, " is older than the previous page's ",
                                        last_page_tli_));
  }
  return is_long ? CheckLongPageHeader(page) : absl::OkStatus();
}

absl::Status WalDecoder::CheckLongPageHeader(Lsn page) const {
  const uint64_t sysid = GetLe64(page_header_ + 24);
  const uint32_t seg_size = GetLe32(page_header_ + 32);
  const uint32_t blcksz = GetLe32(page_header_ + 36);
  if (system_id_ != 0 && sysid != system_id_) {
    return PageError(page,
                     absl::StrCat("system identifier ", sysid, " (expected ", system_id_, ")"));
  }
  if (seg_size != segment_bytes_) {
    return PageError(page,
                     absl::StrCat("segment size ", seg_size, " (expected ", segment_bytes_, ")"));
  }
  if (blcksz != kPageBytes) {
    return PageError(page, absl::StrCat("block size ", blcksz, " (expected ", kPageBytes, ")"));
  }
  return absl::OkStatus();
}

absl::Status WalDecoder::OnPageWhileSkipping(Lsn page, bool cont, bool overwrite, uint32_t rem_len) {
  if (cont) {
    if (rem_len != skip_) {
      return PageError(page, absl::StrCat("xlp_rem_len ", rem_len, " (expected ", skip_, ")"));
    }
  } else if (overwrite) {
    mode_ = Mode::kRecord;  // the record being skipped was cut short; new records follow
    skip_ = 0;
  } else {
    return PageError(page, absl::StrCat("lacks XLP_FIRST_IS_CONTRECORD; ", skip_,
                                        " bytes of a record are still to come"));
  }
  return absl::OkStatus();
}

absl::Status WalDecoder::OnPageInRecords(Lsn page, bool cont, bool overwrite, uint32_t rem_len) {
  if (header_have_ == 0) {
    if (cont) {
      return PageError(page, absl::StrCat("XLP_FIRST_IS_CONTRECORD (xlp_rem_len ", rem_len,
                                          ") but no record is in progress"));
    }
    return absl::OkStatus();
  }
  // Records start 8-aligned and pages end 8-aligned, so a record's first 8 bytes, with
  // xl_tot_len, are always on its first page: record_len_ is known here.
  const uint32_t missing = record_len_ - record_have_;
  if (cont) {
    if (rem_len != missing) {
      return PageError(page,
                       absl::StrCat("xlp_rem_len ", rem_len, " but the record at ",
                                    record_start_.ToString(), " has ", missing, " bytes to come"));
    }
    return absl::OkStatus();
  }
  if (overwrite) {
    // The primary crashed before the rest of this record reached disk and wrote new WAL
    // here instead (xlog.c, CreateOverwriteContrecordRecord). Drop the partial record.
    aborted_record_start_ = record_start_;
    ClearRecord();
    return absl::OkStatus();
  }
  return PageError(page,
                   absl::StrCat("lacks XLP_FIRST_IS_CONTRECORD but the record at ",
                                record_start_.ToString(), " has ", missing, " bytes to come"));
}

}  // namespace ferry::ingest::pg
