// pgoutput decoding. Layouts: docs/protocols.md, "pgoutput" (all integers big-endian).
#include "ingest/pg/pgoutput.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "pipeline/endian.h"

namespace ferry::ingest::pg {

namespace {

using pipeline::ChangeTuple;
using pipeline::ChangeValue;

class Cursor {
 public:
  explicit Cursor(absl::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool done() const { return pos_ == in_.size(); }
  uint8_t I8() { return Need(1) ? static_cast<uint8_t>(in_[pos_++]) : 0; }
  uint16_t I16() {
    if (!Need(2)) return 0;
    const uint16_t v = static_cast<uint16_t>((static_cast<uint8_t>(in_[pos_]) << 8) | static_cast<uint8_t>(in_[pos_ + 1]));
    pos_ += 2;
    return v;
  }
  uint32_t I32() {
    if (!Need(4)) return 0;
    const uint32_t v = pipeline::GetBe32(in_.data() + pos_);
    pos_ += 4;
    return v;
  }
  uint64_t I64() {
    if (!Need(8)) return 0;
    const uint64_t v = pipeline::GetBe64(in_.data() + pos_);
    pos_ += 8;
    return v;
  }
  std::string String() {
    if (!ok_) return {};
    const void* nul = std::memchr(in_.data() + pos_, '\0', in_.size() - pos_);
    if (nul == nullptr) {
      ok_ = false;
      return {};
    }
    const size_t n = static_cast<const char*>(nul) - (in_.data() + pos_);
    std::string s(in_.substr(pos_, n));
    pos_ += n + 1;
    return s;
  }
  std::string Bytes(uint32_t n) {
    if (!Need(n)) return {};
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  pipeline::UnixMicros Timestamp() {
    return pipeline::PgTimeToUnixMicros(static_cast<int64_t>(I64()));
  }
  ChangeTuple Tuple() {
    const uint16_t n = I16();
    if (n > in_.size() - std::min(pos_, in_.size())) ok_ = false;  // each column takes a byte
    ChangeTuple t;
    if (!ok_) return t;
    t.resize(n);
    for (ChangeValue& v : t) {
      switch (I8()) {
        case 'n':
          v.kind = ChangeValue::Kind::kNull;
          break;
        case 'u':
          v.kind = ChangeValue::Kind::kUnchanged;
          break;
        case 't':
          v.kind = ChangeValue::Kind::kText;
          v.text = Bytes(I32());
          break;
        default:  // 'b' (binary) is never requested
          ok_ = false;
      }
      if (!ok_) break;
    }
    return t;
  }
  void Fail() { ok_ = false; }

 private:
  bool Need(size_t n) {
    if (!ok_ || in_.size() - pos_ < n) ok_ = false;
    return ok_;
  }
  absl::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// One function per message type: each reads the body after the type byte into `m`; the
// cursor records whether the bytes were there.

// Inside a streamed block, the data messages name their (sub)transaction first.
void ReadStreamXid(Cursor& c, bool in_stream, PgOutputMessage& m) {
  if (in_stream) m.xid = c.I32();
}

void ParseBegin(Cursor& c, PgOutputMessage& m) {
  m.commit_lsn = c.I64();
  m.ts = c.Timestamp();
  m.xid = c.I32();
}

void ParseCommit(Cursor& c, PgOutputMessage& m) {
  c.I8();  // flags, unused
  m.commit_lsn = c.I64();
  m.end_lsn = c.I64();
  m.ts = c.Timestamp();
}

void ParseOrigin(Cursor& c, PgOutputMessage& m) {
  m.origin_lsn = c.I64();
  m.origin_name = c.String();
}

void ParseRelation(Cursor& c, bool in_stream, PgOutputMessage& m) {
  ReadStreamXid(c, in_stream, m);
  pipeline::ChangeRelation& r = m.relation;
  r.relid = c.I32();
  r.schema = c.String();
  if (r.schema.empty()) r.schema = "pg_catalog";
  r.table = c.String();
  r.replica_identity = static_cast<char>(c.I8());
  const uint16_t n = c.I16();
  for (uint16_t i = 0; i < n && c.ok(); ++i) {
    pipeline::ChangeColumn col;
    col.key = (c.I8() & 1) != 0;
    col.name = c.String();
    col.type_oid = c.I32();
    col.typmod = static_cast<int32_t>(c.I32());
    r.columns.push_back(std::move(col));
  }
}

void ParseType(Cursor& c, bool in_stream, PgOutputMessage& m) {
  ReadStreamXid(c, in_stream, m);
  m.type_oid = c.I32();
  m.type_namespace = c.String();
  m.type_name = c.String();
}

void ParseInsert(Cursor& c, bool in_stream, PgOutputMessage& m) {
  ReadStreamXid(c, in_stream, m);
  m.relid = c.I32();
  if (c.I8() != 'N') c.Fail();
  m.new_tuple = c.Tuple();
  m.has_new = true;
}

void ParseUpdateOrDelete(Cursor& c, bool in_stream, PgOutputMessage& m) {
  ReadStreamXid(c, in_stream, m);
  m.relid = c.I32();
  uint8_t kind = c.I8();
  if (kind == 'K' || kind == 'O') {
    m.old_kind = static_cast<char>(kind);
    m.old_tuple = c.Tuple();
    if (m.type == 'U') kind = c.I8();
  } else if (m.type == 'D') {
    c.Fail();  // a delete always names its old row
  }
  if (m.type == 'U') {
    if (kind != 'N') c.Fail();
    m.new_tuple = c.Tuple();
    m.has_new = true;
  }
}

// `msg_size`: the whole message's, which bounds the relation count.
void ParseTruncate(Cursor& c, bool in_stream, size_t msg_size, PgOutputMessage& m) {
  ReadStreamXid(c, in_stream, m);
  const uint32_t n = c.I32();
  m.truncate_options = c.I8();
  if (n > msg_size) c.Fail();
  for (uint32_t i = 0; i < n && c.ok(); ++i) m.truncate_relids.push_back(c.I32());
}

void ParseLogicalMessage(Cursor& c, bool in_stream, PgOutputMessage& m) {
  ReadStreamXid(c, in_stream, m);
  m.transactional = (c.I8() & 1) != 0;
  m.message_lsn = c.I64();
  m.prefix = c.String();
  m.content = c.Bytes(c.I32());
}

void ParseStreamStart(Cursor& c, PgOutputMessage& m) {
  m.xid = c.I32();
  m.first_segment = c.I8() != 0;
}

void ParseStreamCommit(Cursor& c, PgOutputMessage& m) {
  m.xid = c.I32();
  c.I8();  // flags
  m.commit_lsn = c.I64();
  m.end_lsn = c.I64();
  m.ts = c.Timestamp();
}

void ParseStreamAbort(Cursor& c, PgOutputMessage& m) {
  m.xid = c.I32();
  m.subxid = c.I32();
  // Protocol 4 with streaming 'parallel' adds the abort's LSN and time.
  if (!c.done()) {
    m.end_lsn = c.I64();
    m.ts = c.Timestamp();
  }
}

// 'b': Begin Prepare.
void ParseBeginPrepare(Cursor& c, PgOutputMessage& m) {
  m.commit_lsn = c.I64();
  m.end_lsn = c.I64();
  m.ts = c.Timestamp();
  m.xid = c.I32();
  m.gid = c.String();
}

// 'P' Prepare, 'p' Stream Prepare, 'K' Commit Prepared.
void ParsePrepare(Cursor& c, PgOutputMessage& m) {
  c.I8();  // flags
  m.commit_lsn = c.I64();
  m.end_lsn = c.I64();
  m.ts = c.Timestamp();
  m.xid = c.I32();
  m.gid = c.String();
}

// 'r': Rollback Prepared.
void ParseRollbackPrepared(Cursor& c, PgOutputMessage& m) {
  c.I8();  // flags
  m.commit_lsn = c.I64();  // prepare end
  m.end_lsn = c.I64();     // rollback end
  c.I64();                 // prepare time
  m.ts = c.Timestamp();    // rollback time
  m.xid = c.I32();
  m.gid = c.String();
}

}  // namespace

absl::StatusOr<PgOutputMessage> ParsePgOutput(absl::string_view msg, bool in_stream) {
  if (msg.empty()) return absl::DataLossError("empty pgoutput message");
  PgOutputMessage m;
  m.type = msg[0];
  Cursor c(msg.substr(1));
  switch (m.type) {
    case 'B': ParseBegin(c, m); break;
    case 'C': ParseCommit(c, m); break;
    case 'O': ParseOrigin(c, m); break;
    case 'R': ParseRelation(c, in_stream, m); break;
    case 'Y': ParseType(c, in_stream, m); break;
    case 'I': ParseInsert(c, in_stream, m); break;
    case 'U':
    case 'D': ParseUpdateOrDelete(c, in_stream, m); break;
    case 'T': ParseTruncate(c, in_stream, msg.size(), m); break;
    case 'M': ParseLogicalMessage(c, in_stream, m); break;
    case 'S': ParseStreamStart(c, m); break;
    case 'E': break;
    case 'c': ParseStreamCommit(c, m); break;
    case 'A': ParseStreamAbort(c, m); break;
    case 'b': ParseBeginPrepare(c, m); break;
    case 'P':
    case 'p':
    case 'K': ParsePrepare(c, m); break;
    case 'r': ParseRollbackPrepared(c, m); break;
    default:
      return absl::DataLossError(
          absl::StrCat("unknown pgoutput message type 0x", absl::Hex(static_cast<uint8_t>(m.type))));
  }
  if (!c.ok() || !c.done()) {
    return absl::DataLossError(absl::StrCat("malformed pgoutput '", std::string(1, m.type), "' message of ",
                                            msg.size(), " bytes"));
  }
  return m;
}

}  // namespace ferry::ingest::pg
