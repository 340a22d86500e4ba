// pgoutput message decoding (protocol versions 1 to 4, PostgreSQL 14 to 18). Message layouts:
// docs/protocols.md, "pgoutput". Pure parsing: no connection, no state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pipeline/change_event.h"

namespace ferry::ingest::pg {

// One decoded message; which fields are set depends on `type` (the message's type byte).
struct PgOutputMessage {
  char type = 0;
  uint32_t xid = 0;  // B, streamed changes (S..E), S, c, A, b/P/K/r
  // B: final_lsn as commit_lsn; C/c/K: commit_lsn and end_lsn; P/p/b: prepare and end LSNs.
  uint64_t commit_lsn = 0;
  uint64_t end_lsn = 0;
  pipeline::UnixMicros ts = 0;  // commit / prepare time, converted to the Unix epoch
  // R
  pipeline::ChangeRelation relation;
  // Y
  uint32_t type_oid = 0;
  std::string type_namespace, type_name;
  // I/U/D
  uint32_t relid = 0;
  char old_kind = 0;  // 'K' key only, 'O' whole old row, 0 none
  pipeline::ChangeTuple old_tuple, new_tuple;
  bool has_new = false;
  // T
  std::vector<uint32_t> truncate_relids;
  uint8_t truncate_options = 0;
  // M
  bool transactional = false;
  uint64_t message_lsn = 0;
  std::string prefix, content;
  // O (origin)
  uint64_t origin_lsn = 0;
  std::string origin_name;
  // S
  bool first_segment = false;
  // A
  uint32_t subxid = 0;
  // b, P, p, K, r (two-phase)
  std::string gid;
};

// Decodes one message (the payload of one XLogData). `in_stream`: between Stream Start and
// Stream Stop, where R/Y/I/U/D/T/M carry an xid first. kDataLoss names the message type and
// what is wrong; an unknown type is kDataLoss too (never skipped: it could hold a change).
absl::StatusOr<PgOutputMessage> ParsePgOutput(absl::string_view msg, bool in_stream);

}  // namespace ferry::ingest::pg
