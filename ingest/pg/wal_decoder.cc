// WalDecoder: page headers, record reassembly, CRC-32C and commit times of PostgreSQL 15 WAL.
// Layouts: access/xlog_internal.h, access/xlogrecord.h, access/xact.h (PROTOCOLS.md C.2-C.6).
#include "ingest/pg/wal_decoder.h"

#include <nmmintrin.h>

#include <algorithm>
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

constexpr uint64_t kPageBytes = 8192;
constexpr size_t kShortHeader = 24;
constexpr size_t kLongHeader = 40;
constexpr size_t kRecordHeader = 24;
constexpr uint16_t kPageMagic = 0xD110;  // PostgreSQL 15's XLOG_PAGE_MAGIC
constexpr uint16_t kFirstIsContRecord = 0x0001;
constexpr uint16_t kAllPageFlags = 0x000F;
constexpr uint32_t kMaxRecordBytes = 1u << 30;
constexpr uint8_t kRmXlog = 0;
constexpr uint8_t kRmXact = 1;
constexpr uint8_t kXlogSwitch = 0x40;
constexpr uint8_t kXactOpMask = 0x70;
constexpr uint8_t kXactCommit = 0x00;
constexpr uint8_t kXactCommitPrepared = 0x30;

uint64_t MaxAlign(uint64_t v) { return (v + 7) & ~uint64_t{7}; }

uint32_t Crc32cSoftware(uint32_t crc, const uint8_t* p, size_t n) {
  static const auto* table = [] {
    static uint32_t t[256];
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  while (n--) crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return crc;
}

__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(uint32_t crc, const uint8_t* p, size_t n) {
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

// Walks the fragment headers after the record header to find the main data length
// (XLR_BLOCK_ID_DATA_SHORT/LONG); main data is the record's last bytes. -1 if malformed.
int64_t MainDataLength(absl::string_view rec) {
  size_t at = kRecordHeader;
  auto need = [&](size_t n) { return at + n <= rec.size(); };
  while (need(1)) {
    const uint8_t id = static_cast<uint8_t>(rec[at++]);
    if (id == 255) {  // XLR_BLOCK_ID_DATA_SHORT
      return need(1) ? static_cast<uint8_t>(rec[at]) : -1;
    }
    if (id == 254) {  // XLR_BLOCK_ID_DATA_LONG
      return need(4) ? GetLe32(rec.data() + at) : -1;
    }
    if (id == 253) {  // XLR_BLOCK_ID_ORIGIN
      at += 2;
    } else if (id == 252) {  // XLR_BLOCK_ID_TOPLEVEL_XID
      at += 4;
    } else if (id <= 32) {  // block reference
      if (!need(3)) return -1;
      const uint8_t fork_flags = static_cast<uint8_t>(rec[at]);
      at += 3;  // fork_flags, data_length
      if (fork_flags & 0x10) {  // BKPBLOCK_HAS_IMAGE
        if (!need(5)) return -1;
        const uint8_t bimg_info = static_cast<uint8_t>(rec[at + 4]);
        at += 5;
        const bool compressed = (bimg_info & (0x04 | 0x08 | 0x10)) != 0;
        if ((bimg_info & 0x01) && compressed) at += 2;  // hole_length
      }
      if (!(fork_flags & 0x80)) at += 12;  // RelFileNode unless BKPBLOCK_SAME_REL
      at += 4;                             // BlockNumber
    } else {
      return -1;
    }
  }
  return 0;  // no main data
}

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t len) {
  static const bool hw = __builtin_cpu_supports("sse4.2");
  const auto* p = static_cast<const uint8_t*>(data);
  return hw ? Crc32cHardware(crc, p, len) : Crc32cSoftware(crc, p, len);
}

WalDecoder::WalDecoder(uint64_t segment_bytes, uint64_t system_id)
    : segment_bytes_(segment_bytes), system_id_(system_id) {}

void WalDecoder::Reset(Lsn lsn, bool at_record_boundary) {
  position_ = lsn;
  mode_ = at_record_boundary ? Mode::kRecord : Mode::kSync;
  record_.clear();
  record_len_ = 0;
  skip_ = 0;
  prev_record_start_ = Lsn();
  last_page_tli_ = 0;
}

size_t WalDecoder::PageHeaderSize(uint64_t page_start) const {
  return page_start % segment_bytes_ == 0 ? kLongHeader : kShortHeader;
}

absl::Status WalDecoder::Fail(Lsn at, absl::string_view what) const {
  return absl::DataLossError(absl::StrCat("wal at ", at.ToString(), ": ", what));
}

absl::Status WalDecoder::Feed(absl::string_view bytes, std::vector<CommitInfo>* commits) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  while (n > 0) {
    const uint64_t pos = position_.value();
    const uint64_t page_start = pos - pos % kPageBytes;
    const uint64_t in_page = pos - page_start;
    const size_t hsize = PageHeaderSize(page_start);

    if (mode_ == Mode::kSkipSwitch) {
      // Nothing but filler until the next segment: skip it, headers included.
      const uint64_t seg_end = pos - pos % segment_bytes_ + segment_bytes_;
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n, seg_end - pos));
      p += take;
      n -= take;
      position_ = Lsn(pos + take);
      if (position_.value() == seg_end) mode_ = Mode::kRecord;
      continue;
    }
    if (mode_ == Mode::kSync && in_page != 0) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n, kPageBytes - in_page));
      p += take;
      n -= take;
      position_ = Lsn(pos + take);
      continue;
    }
    if (mode_ == Mode::kSync) mode_ = Mode::kSyncHeader;  // at a page boundary now
    if (in_page < hsize) {  // inside a page header
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n, hsize - in_page));
      std::memcpy(page_header_ + in_page, p, take);
      p += take;
      n -= take;
      position_ = Lsn(pos + take);
      if (in_page + take == hsize) {
        absl::Status st = OnPageHeader();
        if (!st.ok()) return st;
      }
      continue;
    }
    const size_t page_left = static_cast<size_t>(std::min<uint64_t>(n, kPageBytes - in_page));
    if (mode_ == Mode::kSkipCont || skip_ > 0) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(page_left, skip_));
      p += take;
      n -= take;
      skip_ -= take;
      position_ = Lsn(pos + take);
      if (skip_ == 0 && mode_ == Mode::kSkipCont) {
        mode_ = Mode::kRecord;
        skip_ = MaxAlign(position_.value()) - position_.value();
      }
      continue;
    }
    // kRecord: collect bytes of the current record.
    if (record_.empty()) {
      record_start_ = position_;
      record_len_ = 0;
    }
    size_t want = record_len_ == 0 ? 4 - std::min<size_t>(4, record_.size()) : record_len_ - record_.size();
    if (record_len_ == 0 && record_.size() >= 4) want = 0;
    const size_t take = std::min(page_left, want);
    record_.append(p, take);
    p += take;
    n -= take;
    position_ = Lsn(pos + take);
    if (record_len_ == 0 && record_.size() >= 4) {
      const uint32_t len = GetLe32(record_.data());
      if (len == 0 && !prev_record_start_.valid()) {
        // Landed in the zero filler after an XLOG_SWITCH while resynchronising.
        record_.clear();
        mode_ = Mode::kSkipSwitch;
        continue;
      }
      if (len < kRecordHeader || len > kMaxRecordBytes) {
        return Fail(record_start_, absl::StrCat("invalid record length ", len));
      }
      record_len_ = len;
      record_.reserve(len);
    }
    if (record_len_ != 0 && record_.size() == record_len_) {
      absl::Status st = OnRecordComplete(commits);
      if (!st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::Status WalDecoder::OnPageHeader() {
  const uint64_t pos = position_.value();
  const uint64_t page_start = pos - pos % kPageBytes;  // the header just completed is this page's
  const size_t hsize = PageHeaderSize(page_start);
  const Lsn page(page_start);
  const uint16_t magic = GetLe16(page_header_);
  const uint16_t info = GetLe16(page_header_ + 2);
  const uint32_t tli = GetLe32(page_header_ + 4);
  const uint64_t pageaddr = GetLe64(page_header_ + 8);
  const uint32_t rem_len = GetLe32(page_header_ + 16);
  if (magic != kPageMagic) {
    return Fail(page, absl::StrFormat("bad page magic 0x%04X (expected 0x%04X, PostgreSQL 15)", magic, kPageMagic));
  }
  if ((info & ~kAllPageFlags) != 0) return Fail(page, absl::StrFormat("bad page flags 0x%04X", info));
  if (pageaddr != page_start) {
    return Fail(page, absl::StrCat("page header says it is at ", Lsn(pageaddr).ToString()));
  }
  if (tli < last_page_tli_) {
    return Fail(page, absl::StrCat("page timeline ", tli, " is older than the previous page's ", last_page_tli_));
  }
  last_page_tli_ = tli;
  if (hsize == kLongHeader) {
    const uint64_t sysid = GetLe64(page_header_ + 24);
    const uint32_t seg_size = GetLe32(page_header_ + 32);
    const uint32_t blcksz = GetLe32(page_header_ + 36);
    if (system_id_ != 0 && sysid != system_id_) {
      return Fail(page, absl::StrCat("system id ", sysid, " differs from the server's ", system_id_));
    }
    if (seg_size != segment_bytes_ || blcksz != kPageBytes) {
      return Fail(page, absl::StrCat("long page header has segment size ", seg_size, " and block size ", blcksz));
    }
  }
  const bool cont = (info & kFirstIsContRecord) != 0;
  if (mode_ == Mode::kSyncHeader) {
    mode_ = cont ? Mode::kSkipCont : Mode::kRecord;
    skip_ = cont ? rem_len : 0;
    if (!cont) record_.clear();
    return absl::OkStatus();
  }
  if (mode_ == Mode::kSkipCont) {
    skip_ = rem_len;  // the continuation goes on: its remaining length counts down per page
    return absl::OkStatus();
  }
  const bool mid_record = !record_.empty();
  if (mid_record != cont) {
    return Fail(page, mid_record ? "record continues but the page lacks XLP_FIRST_IS_CONTRECORD"
                                 : "unexpected XLP_FIRST_IS_CONTRECORD at a record boundary");
  }
  if (mid_record && record_len_ != 0 && rem_len != record_len_ - record_.size()) {
    return Fail(page, absl::StrCat("xlp_rem_len ", rem_len, " but ", record_len_ - record_.size(),
                                   " bytes of the record are missing"));
  }
  return absl::OkStatus();
}

absl::Status WalDecoder::OnRecordComplete(std::vector<CommitInfo>* commits) {
  const char* r = record_.data();
  uint32_t crc = Crc32cExtend(0xFFFFFFFFu, r + kRecordHeader, record_len_ - kRecordHeader);
  crc = Crc32cExtend(crc, r, 20) ^ 0xFFFFFFFFu;
  const uint32_t stored = GetLe32(r + 20);
  if (crc != stored) {
    return Fail(record_start_, absl::StrFormat("record crc mismatch (stored 0x%08X, computed 0x%08X)", stored, crc));
  }
  const uint64_t xl_prev = GetLe64(r + 8);
  if (prev_record_start_.valid() && xl_prev != prev_record_start_.value()) {
    return Fail(record_start_, absl::StrCat("xl_prev ", Lsn(xl_prev).ToString(), " does not point at the previous record ",
                                            prev_record_start_.ToString()));
  }
  const uint8_t info = static_cast<uint8_t>(r[16]);
  const uint8_t rmid = static_cast<uint8_t>(r[17]);
  ++records_verified_;
  last_record_end_ = position_;
  if (rmid == kRmXact && commits != nullptr) {
    const uint8_t op = info & kXactOpMask;
    if (op == kXactCommit || op == kXactCommitPrepared) {
      const int64_t main_len = MainDataLength(record_);
      if (main_len >= 8 && static_cast<uint64_t>(main_len) <= record_len_ - kRecordHeader) {
        int64_t xact_time;
        std::memcpy(&xact_time, r + record_len_ - main_len, 8);
        commits->push_back(CommitInfo{position_, xact_time + pipeline::kPgEpochUnixMicros, GetLe32(r + 4)});
      }
    }
  }
  prev_record_start_ = record_start_;
  record_.clear();
  record_len_ = 0;
  if (rmid == kRmXlog && (info & 0xF0) == kXlogSwitch) {
    mode_ = position_.value() % segment_bytes_ == 0 ? Mode::kRecord : Mode::kSkipSwitch;
  } else {
    skip_ = MaxAlign(position_.value()) - position_.value();
  }
  return absl::OkStatus();
}

}  // namespace ferry::ingest::pg
