// pg-changes record encoding. Layout: docs/archive-format.md ("pg-changes records").
#include "pipeline/change_event.h"

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "pipeline/endian.h"

namespace ferry::pipeline {

namespace {

constexpr uint8_t kVersion = 1;
constexpr uint8_t kFlagFirst = 1;
constexpr uint8_t kFlagLast = 2;

class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Put(&PutLe16, v, 2); }
  void U32(uint32_t v) { Put(&PutLe32, v, 4); }
  void U64(uint64_t v) { Put(&PutLe64, v, 8); }
  void Str(absl::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_->append(s.data(), s.size());
  }
  void Tuple(const ChangeTuple& t) {
    U16(static_cast<uint16_t>(t.size()));
    for (const ChangeValue& v : t) {
      U8(static_cast<uint8_t>(v.kind));
      if (v.kind == ChangeValue::Kind::kText) Str(v.text);
    }
  }

 private:
  template <typename F, typename V>
  void Put(F f, V v, size_t n) {
    const size_t at = out_->size();
    out_->resize(at + n);
    f(out_->data() + at, v);
  }
  std::string* out_;
};

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool done() const { return pos_ == in_.size(); }
  uint8_t U8() { return Need(1) ? static_cast<uint8_t>(in_[pos_++]) : 0; }
  uint16_t U16() { return Get<uint16_t>(&GetLe16, 2); }
  uint32_t U32() { return Get<uint32_t>(&GetLe32, 4); }
  uint64_t U64() { return Get<uint64_t>(&GetLe64, 8); }
  std::string Str() {
    const uint32_t n = U32();
    if (!Need(n)) return {};
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  ChangeTuple Tuple() {
    ChangeTuple t(U16());
    for (ChangeValue& v : t) {
      const uint8_t kind = U8();
      if (kind != 'n' && kind != 'u' && kind != 't') ok_ = false;
      v.kind = static_cast<ChangeValue::Kind>(kind);
      if (v.kind == ChangeValue::Kind::kText) v.text = Str();
      if (!ok_) return {};
    }
    return t;
  }
  // A count read from the input may not promise more elements than bytes remain.
  bool Plausible(uint64_t count) {
    if (count > in_.size() - pos_) ok_ = false;
    return ok_;
  }

 private:
  bool Need(size_t n) {
    if (!ok_ || in_.size() - pos_ < n) ok_ = false;
    return ok_;
  }
  template <typename V, typename F>
  V Get(F f, size_t n) {
    if (!Need(n)) return 0;
    V v = f(in_.data() + pos_);
    pos_ += n;
    return v;
  }
  absl::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

bool ValidOp(uint8_t op) {
  switch (static_cast<ChangeOp>(op)) {
    case ChangeOp::kInsert:
    case ChangeOp::kUpdate:
    case ChangeOp::kDelete:
    case ChangeOp::kRead:
    case ChangeOp::kTruncate:
    case ChangeOp::kMessage:
      return true;
  }
  return false;
}

}  // namespace

std::string EncodeChangeBatch(const ChangeBatch& b) {
  std::string out;
  Writer w(&out);
  w.U8(kVersion);
  w.U8(static_cast<uint8_t>(b.kind));
  w.U8((b.first ? kFlagFirst : 0) | (b.last ? kFlagLast : 0));
  w.U32(b.xid);
  w.U64(b.commit_lsn);
  w.U64(b.end_lsn);
  w.U64(static_cast<uint64_t>(b.commit_ts));
  w.Str(b.database);
  w.U32(static_cast<uint32_t>(b.relations.size()));
  for (const ChangeRelation& r : b.relations) {
    w.U32(r.relid);
    w.Str(r.schema);
    w.Str(r.table);
    w.U8(static_cast<uint8_t>(r.replica_identity));
    w.U16(static_cast<uint16_t>(r.columns.size()));
    for (const ChangeColumn& c : r.columns) {
      w.Str(c.name);
      w.U32(c.type_oid);
      w.U32(static_cast<uint32_t>(c.typmod));
      w.U8((c.key ? 1 : 0) | (c.primary_key ? 2 : 0));
      w.Str(c.type_name);
    }
  }
  w.U32(static_cast<uint32_t>(b.events.size()));
  for (const ChangeEvent& e : b.events) {
    w.U8(static_cast<uint8_t>(e.op));
    w.U64(e.lsn);
    switch (e.op) {
      case ChangeOp::kTruncate:
        w.U8(e.truncate_options);
        w.U32(static_cast<uint32_t>(e.truncated.size()));
        for (uint32_t r : e.truncated) w.U32(r);
        break;
      case ChangeOp::kMessage:
        w.Str(e.prefix);
        w.Str(e.content);
        break;
      default:
        w.U32(e.relation);
        w.U8((e.has_before ? 1 : 0) | (e.has_after ? 2 : 0));
        if (e.has_before) w.Tuple(e.before);
        if (e.has_after) w.Tuple(e.after);
    }
  }
  return out;
}

absl::StatusOr<ChangeBatch> DecodeChangeBatch(absl::string_view bytes) {
  Reader r(bytes);
  auto bad = [](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("malformed pg-changes record: ", what));
  };
  if (r.U8() != kVersion) return bad("unknown version");
  ChangeBatch b;
  const uint8_t kind = r.U8();
  if (kind != 1 && kind != 2) return bad("unknown kind");
  b.kind = static_cast<ChangeBatch::Kind>(kind);
  const uint8_t flags = r.U8();
  b.first = (flags & kFlagFirst) != 0;
  b.last = (flags & kFlagLast) != 0;
  b.xid = r.U32();
  b.commit_lsn = r.U64();
  b.end_lsn = r.U64();
  b.commit_ts = static_cast<UnixMicros>(r.U64());
  b.database = r.Str();
  const uint32_t nrel = r.U32();
  if (!r.Plausible(nrel)) return bad("relation count");
  b.relations.resize(nrel);
  for (ChangeRelation& rel : b.relations) {
    rel.relid = r.U32();
    rel.schema = r.Str();
    rel.table = r.Str();
    rel.replica_identity = static_cast<char>(r.U8());
    rel.columns.resize(r.U16());
    for (ChangeColumn& c : rel.columns) {
      c.name = r.Str();
      c.type_oid = r.U32();
      c.typmod = static_cast<int32_t>(r.U32());
      const uint8_t flags = r.U8();
      c.key = (flags & 1) != 0;
      c.primary_key = (flags & 2) != 0;
      c.type_name = r.Str();
    }
    if (!r.ok()) return bad("truncated relation");
  }
  const uint32_t nev = r.U32();
  if (!r.Plausible(nev)) return bad("event count");
  b.events.resize(nev);
  for (ChangeEvent& e : b.events) {
    const uint8_t op = r.U8();
    if (!ValidOp(op)) return bad(absl::StrCat("unknown op 0x", absl::Hex(op)));
    e.op = static_cast<ChangeOp>(op);
    e.lsn = r.U64();
    if (e.op == ChangeOp::kTruncate) {
      e.truncate_options = r.U8();
      const uint32_t n = r.U32();
      if (!r.Plausible(n)) return bad("truncate count");
      for (uint32_t i = 0; i < n; ++i) {
        e.truncated.push_back(r.U32());
        if (e.truncated.back() >= nrel) return bad("truncate names an unknown relation");
      }
    } else if (e.op == ChangeOp::kMessage) {
      e.prefix = r.Str();
      e.content = r.Str();
    } else {
      e.relation = r.U32();
      if (e.relation >= nrel) return bad("event names an unknown relation");
      const uint8_t tuples = r.U8();
      e.has_before = (tuples & 1) != 0;
      e.has_after = (tuples & 2) != 0;
      if (e.has_before) e.before = r.Tuple();
      if (e.has_after) e.after = r.Tuple();
      const size_t ncols = b.relations[e.relation].columns.size();
      if (r.ok() && ((e.has_before && e.before.size() != ncols) || (e.has_after && e.after.size() != ncols))) {
        return bad("tuple width differs from its relation");
      }
    }
    if (!r.ok()) return bad("truncated event");
  }
  if (!r.ok()) return bad("truncated");
  if (!r.done()) return bad("trailing bytes");
  return b;
}

absl::StatusOr<bool> ChangeAssembler::Add(absl::string_view record, ChangeBatch* out) {
  FERRY_ASSIGN_OR_RETURN(ChangeBatch part, DecodeChangeBatch(record));
  if (part.first) {
    pending_ = std::move(part);  // an unfinished one before it was cut off by a restart
  } else {
    if (!open_) {
      // The stream was read from the middle of a transaction: its start is not ours to see.
      return false;
    }
    const uint32_t offset = static_cast<uint32_t>(pending_.relations.size());
    for (ChangeRelation& r : part.relations) pending_.relations.push_back(std::move(r));
    for (ChangeEvent& e : part.events) {
      if (e.op != ChangeOp::kTruncate && e.op != ChangeOp::kMessage) e.relation += offset;
      for (uint32_t& t : e.truncated) t += offset;
      pending_.events.push_back(std::move(e));
    }
    pending_.last = part.last;
    pending_.end_lsn = part.end_lsn;
  }
  open_ = !pending_.last;
  if (open_) return false;
  *out = std::move(pending_);
  pending_ = ChangeBatch();
  return true;
}

std::string FormatStreamPosition(StreamKind kind, uint64_t pos) {
  if (kind == StreamKind::kRedisCommands) return absl::StrCat(pos);
  if (kind == StreamKind::kPgChanges) {
    const uint64_t part = pos & ((uint64_t{1} << kChangePartBits) - 1);
    const std::string lsn = Lsn(ChangePositionLsn(pos)).ToString();
    return part == 0 ? lsn : absl::StrCat(lsn, "+", part);
  }
  return Lsn(pos).ToString();
}

}  // namespace ferry::pipeline
