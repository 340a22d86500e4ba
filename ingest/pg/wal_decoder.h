// Streaming validator for PostgreSQL 15 WAL: walks page headers and records across arbitrary
// chunk boundaries, checks every record's CRC-32C as bytes arrive, and extracts commit times.
// Formats: PostgreSQL's access/xlog_internal.h, access/xlogrecord.h, access/xact.h
// (summarised in ../shared/PROTOCOLS.md sections C.2 to C.6).
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
  pipeline::Lsn end_lsn;           // first byte after the commit record
  pipeline::UnixMicros commit_time = 0;  // xact_time converted to Unix microseconds
  uint32_t xid = 0;                // xl_xid of the record
};

// Not thread-safe: one decoder per stream, fed in stream order.
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

  // Feeds the next bytes of WAL; they begin exactly at position(). Validates page headers
  // (magic 0xD110, flags, xlp_pageaddr, xlp_tli not older than the last page's, segment size
  // and system id in long headers) and each completed record (length, xl_prev chain, CRC-32C).
  // Commit records completed by these bytes are appended to *commits when it is not null.
  // Returns kDataLoss naming the LSN and the reason on the first bad byte; after an error the
  // decoder must be Reset before further use.
  absl::Status Feed(absl::string_view bytes, std::vector<CommitInfo>* commits);

  // The LSN of the next byte Feed expects.
  pipeline::Lsn position() const { return position_; }
  // End of the last complete, verified record (0/0 before the first one).
  pipeline::Lsn last_record_end() const { return last_record_end_; }
  uint64_t records_verified() const { return records_verified_; }

 private:
  enum class Mode {
    kSync,        // ignoring bytes until the next page header
    kSyncHeader,  // reading the page header to resynchronise from
    kSkipCont,    // skipping the continuation of a record that began before the resync
    kRecord,      // collecting a record (or about to start one)
    kSkipSwitch,  // after XLOG_SWITCH: the rest of the segment holds no records
  };

  absl::Status OnPageHeader();
  absl::Status OnRecordComplete(std::vector<CommitInfo>* commits);
  absl::Status Fail(pipeline::Lsn at, absl::string_view what) const;
  size_t PageHeaderSize(uint64_t page_start) const;

  uint64_t segment_bytes_;
  uint64_t system_id_;
  pipeline::Lsn position_;
  pipeline::Lsn last_record_end_;
  uint64_t records_verified_ = 0;

  Mode mode_ = Mode::kSync;
  char page_header_[40];
  uint32_t last_page_tli_ = 0;
  uint64_t skip_ = 0;            // bytes still to skip in kSkipCont / padding
  std::string record_;           // the record being collected, page headers removed
  uint32_t record_len_ = 0;      // xl_tot_len once known (0: not yet)
  pipeline::Lsn record_start_;   // LSN of the record's first byte
  pipeline::Lsn prev_record_start_;  // for the xl_prev chain; invalid after a resync
};

// CRC-32C (Castagnoli), as PostgreSQL computes it: crc = Crc32cExtend(0xFFFFFFFF, ...) over
// the pieces, then xor 0xFFFFFFFF. Uses SSE4.2 when the CPU has it.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t len);

}  // namespace ferry::ingest::pg
