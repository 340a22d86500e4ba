// Streaming validator for the WAL of PostgreSQL 14 to 18: walks page headers and records across arbitrary
// chunk boundaries, checks every record's CRC-32C as bytes arrive, and extracts commit times.
// Formats: PostgreSQL's access/xlog_internal.h, access/xlogrecord.h, access/xact.h
// (summarised in docs/protocols.md, "WAL on disk").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "pipeline/position.h"

namespace ferry::ingest::pg {

// A commit (or commit-prepared) record found in the stream.
struct CommitInfo {
  pipeline::Lsn end_lsn;                 // first byte after the commit record
  pipeline::UnixMicros commit_time = 0;  // xact_time converted to Unix microseconds
  uint32_t xid = 0;                      // xl_xid of the record
};

// Not thread-safe: one decoder per stream, fed in stream order.
struct WalVersion;  // the per-major layout facts (wal_decoder.cc)

class WalDecoder {
 public:
  // segment_bytes: the server's wal_segment_size (a power of two). system_id: the expected
  // xlp_sysid of long page headers, 0 to skip that check.
  WalDecoder(uint64_t segment_bytes, uint64_t system_id);

  // Restarts decoding at `lsn`. With at_record_boundary a record is known to begin exactly
  // there (a timeline switch point, or a position this decoder reported as a record end).
  // Otherwise the decoder ignores bytes up to the next page boundary and resynchronises from
  // that page's header (skipping the continuation of a record that began earlier).
  void Reset(pipeline::Lsn lsn, bool at_record_boundary);

  // The server's major version, when known (a source knows it from its connection): its page
  // magic is then the only one accepted, and records before the first page header are read
  // with its layout. False for a major ferry does not read. Kept across Reset.
  bool ExpectMajor(int major);
  // The major of the WAL decoded so far (0 before the first page header and ExpectMajor).
  int major_version() const;

  // Feeds the next bytes of WAL; they begin exactly at position(). Validates page headers
  // (magic 0xD110, flags, xlp_pageaddr, xlp_tli not older than the last page's, segment size
  // and system id in long headers) and each completed record (length, xl_prev chain, CRC-32C).
  // Commit records completed by these bytes are appended to *commits when it is not null.
  // Returns kDataLoss naming the LSN and the reason on the first bad byte; after an error the
  // decoder must be Reset before further use.
  absl::Status Feed(absl::string_view bytes, std::vector<CommitInfo>* commits);

  // The LSN of the next byte Feed expects.
  pipeline::Lsn position() const { return position_; }
  // End of the last complete, verified record: the byte after it, not MAXALIGNed (0/0 before
  // the first one). An XLOG_SWITCH record counts as reaching the segment end once its zero
  // filler has been fed, as in PostgreSQL's xlogreader. Reset(last_record_end(), true) resumes.
  pipeline::Lsn last_record_end() const { return last_record_end_; }
  // Start of the last complete, verified record (invalid before the first one after a Reset):
  // a recovery_target_lsn there makes recovery replay that record and stop, having read
  // nothing after it.
  pipeline::Lsn last_record_start() const { return prev_record_start_; }
  uint64_t records_verified() const { return records_verified_; }

 private:
  enum class Mode {
    kSync,        // resynchronising: ignoring bytes until the next page boundary
    kSyncHeader,  // resynchronising: reading the page header to start from
    kSkipCont,    // resynchronising: skipping the tail of a record that began earlier
    kRecord,      // between records (skipping padding) or inside one
    kSkipSwitch,  // after XLOG_SWITCH: zeros, page headers included, up to the segment end
  };

  // Consumes record bytes from p[0, n), all on the current page, and sets *used.
  absl::Status RecordBytes(const char* p, size_t n, size_t* used, std::vector<CommitInfo>* commits);
  absl::Status CheckRecordLength(uint32_t len) const;
  absl::Status CheckRecordHeader(const char* header) const;
  absl::Status OnRecordComplete(const char* header, uint32_t body_crc, absl::string_view body,
                                std::vector<CommitInfo>* commits);
  absl::Status OnPageHeader(uint64_t page_start);
  // OnPageHeader's checks of the header's fields: magic, flags, address, timeline.
  absl::Status CheckPageHeader(pipeline::Lsn page, bool is_long) const;
  // A long header's: system identifier, segment and block size.
  absl::Status CheckLongPageHeader(pipeline::Lsn page) const;
  // A page's continuation flags while skipping the tail of a record that began earlier.
  absl::Status OnPageWhileSkipping(pipeline::Lsn page, bool cont, bool overwrite, uint32_t rem_len);
  // A page's continuation flags between records or inside one.
  absl::Status OnPageInRecords(pipeline::Lsn page, bool cont, bool overwrite, uint32_t rem_len);
  size_t PageHeaderSize(uint64_t page_start) const;
  void ClearRecord();

  uint64_t segment_bytes_;
  uint64_t system_id_;
  pipeline::Lsn position_;
  pipeline::Lsn last_record_end_;
  uint64_t records_verified_ = 0;

  Mode mode_ = Mode::kSync;
  char page_header_[40];  // a page header being read (it may arrive in pieces)
  uint32_t last_page_tli_ = 0;
  // The major whose WAL this is: from ExpectMajor, else learnt from the first page header;
  // every later page must carry the same magic.
  const WalVersion* version_ = nullptr;
  const WalVersion& layout() const;
  uint64_t skip_ = 0;  // kSkipCont: continuation bytes left; kRecord: padding left

  // The record in progress. Its body is checksummed as it streams past; a body is copied
  // only when its contents are needed (commits, XLOG_OVERWRITE_CONTRECORD) and it arrives
  // in pieces.
  pipeline::Lsn record_start_;
  char record_header_[24];
  uint32_t header_have_ = 0;  // bytes of record_header_ read; 0: no record in progress
  uint32_t record_len_ = 0;   // xl_tot_len, once its 4 bytes are in
  uint32_t record_have_ = 0;  // bytes of the record read, header included
  uint32_t body_crc_ = 0;     // running CRC-32C of the body (bytes 24..xl_tot_len)
  bool keep_body_ = false;
  std::string body_;

  pipeline::Lsn prev_record_start_;  // for the xl_prev chain; invalid after a Reset
  // A record cut short by XLP_FIRST_IS_OVERWRITE_CONTRECORD: the next record must be the
  // XLOG_OVERWRITE_CONTRECORD naming it.
  pipeline::Lsn aborted_record_start_;
};

// CRC-32C (Castagnoli), as PostgreSQL computes it: crc = Crc32cExtend(0xFFFFFFFF, ...) over
// the pieces, then xor 0xFFFFFFFF. Uses SSE4.2 when the CPU has it.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t len);

}  // namespace ferry::ingest::pg
