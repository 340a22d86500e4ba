// Debezium envelopes with RapidJSON's writer. Type mapping: docs/change-events.md, "Types".
#include "cross_region/debezium.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace ferry::cross_region {

using pipeline::ChangeBatch;
using pipeline::ChangeColumn;
using pipeline::ChangeEvent;
using pipeline::ChangeOp;
using pipeline::ChangeRelation;
using pipeline::ChangeTuple;
using pipeline::ChangeValue;

namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Built-in type OIDs (pg_type.dat).
enum : uint32_t {
  kBool = 16, kBytea = 17, kInt8 = 20, kInt2 = 21, kInt4 = 23, kOid = 26, kJson = 114, kFloat4 = 700,
  kFloat8 = 701, kDate = 1082, kTime = 1083, kTimestamp = 1114, kTimestamptz = 1184, kNumeric = 1700,
};

// Element type of the common array types; 0 when `oid` is not one.
uint32_t ArrayElement(uint32_t oid) {
  switch (oid) {
    case 1000: return kBool;
    case 1001: return kBytea;
    case 1005: return kInt2;
    case 1007: return kInt4;
    case 1016: return kInt8;
    case 1021: return kFloat4;
    case 1022: return kFloat8;
    case 1231: return kNumeric;
    case 1182: return kDate;
    case 1183: return kTime;
    case 1115: return kTimestamp;
    case 1185: return kTimestamptz;
    case 199: return kJson;
    case 1009:   // text[]
    case 1015:   // varchar[]
    case 1014:   // bpchar[]
    case 2951:   // uuid[]
    case 3807:   // jsonb[]
      return 25;  // rendered as strings
    default: return 0;
  }
}

void String(JsonWriter& w, absl::string_view s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); }

absl::optional<absl::Time> ParseTimestamp(absl::string_view text) {
  // DateStyle=ISO, TimeZone=UTC (the source's session): "2026-11-24 10:00:00.5" or with "+00".
  std::string t(text);
  if (t.size() > 3 && (absl::EndsWith(t, "+00") || absl::EndsWith(t, "-00"))) t.resize(t.size() - 3);
  absl::Time out;
  std::string err;
  if (!absl::ParseTime("%Y-%m-%d %H:%M:%E*S", t, absl::UTCTimeZone(), &out, &err)) return absl::nullopt;
  return out;
}

void Scalar(JsonWriter& w, uint32_t oid, int32_t typmod, absl::string_view text) {
  switch (oid) {
    case kBool:
      w.Bool(text == "t");
      return;
    case kInt2:
    case kInt4:
    case kInt8:
    case kOid: {
      int64_t v = 0;
      if (absl::SimpleAtoi(text, &v)) {
        w.Int64(v);
        return;
      }
      break;
    }
    case kFloat4:
    case kFloat8: {
      double v = 0;
      // NaN and the infinities have no JSON number: they stay strings, as Debezium writes them.
      if (absl::SimpleAtod(text, &v) && std::isfinite(v)) {
        w.RawValue(text.data(), text.size(), rapidjson::kNumberType);
        return;
      }
      break;
    }
    case kBytea:
      if (absl::StartsWith(text, "\\x")) {
        const std::string bytes = absl::HexStringToBytes(text.substr(2));
        String(w, absl::Base64Escape(bytes));
        return;
      }
      break;
    case kDate: {
      absl::CivilDay day;
      if (absl::ParseCivilTime(text, &day)) {
        w.Int64(day - absl::CivilDay(1970, 1, 1));  // io.debezium.time.Date: days since the epoch
        return;
      }
      break;
    }
    case kTime: {
      absl::Time t;
      std::string err;
      if (absl::ParseTime("%H:%M:%E*S", text, absl::UTCTimeZone(), &t, &err)) {
        // Precision 0 to 3: io.debezium.time.Time (ms); otherwise MicroTime (µs).
        const int64_t micros = absl::ToUnixMicros(t) % (int64_t{86400} * 1000000);
        w.Int64(typmod >= 0 && typmod <= 3 ? micros / 1000 : micros);
        return;
      }
      break;
    }
    case kTimestamp:
      if (auto t = ParseTimestamp(text)) {
        // Precision 0 to 3: io.debezium.time.Timestamp (ms); otherwise MicroTimestamp (µs).
        if (typmod >= 0 && typmod <= 3) {
          w.Int64(absl::ToUnixMillis(*t));
        } else {
          w.Int64(absl::ToUnixMicros(*t));
        }
        return;
      }
      break;
    case kTimestamptz:
      if (auto t = ParseTimestamp(text)) {
        String(w, absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", *t, absl::UTCTimeZone()));  // ZonedTimestamp
        return;
      }
      break;
    default:
      break;
  }
  String(w, text);  // numeric (string mode), text types, json, uuid, enums, and what did not parse
}

// PostgreSQL's array text form: {a,"b c",NULL,{d,e}}. Returns false when it is not one.
bool ArrayValue(JsonWriter& w, uint32_t element, absl::string_view text, size_t* pos) {
  if (*pos >= text.size() || text[*pos] != '{') return false;
  ++*pos;
  w.StartArray();
  bool first = true;
  while (*pos < text.size()) {
    if (text[*pos] == '}') {
      ++*pos;
      w.EndArray();
      return true;
    }
    if (!first) {
      if (text[*pos] != ',') return false;
      ++*pos;
    }
    first = false;
    if (*pos < text.size() && text[*pos] == '{') {
      if (!ArrayValue(w, element, text, pos)) return false;
      continue;
    }
    std::string item;
    bool quoted = false;
    if (*pos < text.size() && text[*pos] == '"') {
      quoted = true;
      ++*pos;
      while (*pos < text.size() && text[*pos] != '"') {
        if (text[*pos] == '\\' && *pos + 1 < text.size()) ++*pos;
        item += text[(*pos)++];
      }
      if (*pos >= text.size()) return false;
      ++*pos;
    } else {
      while (*pos < text.size() && text[*pos] != ',' && text[*pos] != '}') item += text[(*pos)++];
    }
    if (!quoted && item == "NULL") {
      w.Null();
    } else {
      Scalar(w, element, -1, item);
    }
  }
  return false;
}

void Value(JsonWriter& w, const ChangeColumn& col, const ChangeValue& v) {
  switch (v.kind) {
    case ChangeValue::Kind::kNull:
      w.Null();
      return;
    case ChangeValue::Kind::kUnchanged:
      String(w, kUnavailableValue);  // never a silent null
      return;
    case ChangeValue::Kind::kText:
      break;
  }
  if (const uint32_t element = ArrayElement(col.type_oid); element != 0) {
    // Render into a scratch writer first: a malformed array falls back to its text.
    rapidjson::StringBuffer buf;
    JsonWriter scratch(buf);
    size_t pos = 0;
    if (ArrayValue(scratch, element, v.text, &pos) && pos == v.text.size()) {
      w.RawValue(buf.GetString(), buf.GetSize(), rapidjson::kArrayType);
      return;
    }
    String(w, v.text);
    return;
  }
  Scalar(w, col.type_oid, col.typmod, v.text);
}

void Row(JsonWriter& w, const ChangeRelation& rel, const ChangeTuple* t) {
  if (t == nullptr) {
    w.Null();
    return;
  }
  w.StartObject();
  for (size_t i = 0; i < rel.columns.size(); ++i) {
    String(w, rel.columns[i].name);
    Value(w, rel.columns[i], (*t)[i]);
  }
  w.EndObject();
}

// {"pk": value, ...} from `t`, or "" when the table has no primary key.
std::string Key(const ChangeRelation& rel, const ChangeTuple& t) {
  bool any = false;
  for (const ChangeColumn& c : rel.columns) any = any || c.primary_key;
  if (!any) return "";
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  for (size_t i = 0; i < rel.columns.size(); ++i) {
    if (!rel.columns[i].primary_key) continue;
    String(w, rel.columns[i].name);
    Value(w, rel.columns[i], t[i]);
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

bool KeyChanged(const ChangeRelation& rel, const ChangeEvent& e) {
  if (!e.has_before || !e.has_after) return false;
  for (size_t i = 0; i < rel.columns.size(); ++i) {
    if (rel.columns[i].primary_key && e.before[i].kind != ChangeValue::Kind::kNull && !(e.before[i] == e.after[i])) {
      return true;
    }
  }
  return false;
}

// One Debezium message to render: an event's table, op and rows.
struct Envelope {
  const ChangeEvent& event;
  uint32_t relation = 0;
  char op = 0;
  const ChangeTuple* before = nullptr;
  const ChangeTuple* after = nullptr;
  bool last_of_snapshot = false;
};

// Renders one batch's events (see RenderDebezium), with what all their envelopes share made
// once per batch, not per event.
class DebeziumRenderer {
 public:
  DebeziumRenderer(const ChangeBatch& batch, const DebeziumOptions& options, int64_t now_ms,
                   std::vector<KafkaRecord>* out)
      : batch_(batch),
        options_(options),
        now_ms_(now_ms),
        out_(out),
        snapshot_(batch.kind == ChangeBatch::Kind::kSnapshot),
        server_name_(absl::StrCat(options.topic_prefix, ".", options.source)) {
    for (const ChangeRelation& rel : batch.relations) topics_.push_back(TableTopic(options, rel.schema, rel.table));
  }

  void Render() {
    for (size_t i = 0; i < batch_.events.size(); ++i) RenderEvent(i);
  }

 private:
  void RenderEvent(size_t i);
  void RenderUpdate(const ChangeEvent& e, const ChangeRelation& rel);
  void Emit(const Envelope& env, const std::string& key);
  // The envelope's "source" block.
  void WriteSource(JsonWriter& w, const Envelope& env);
  void Tombstone(uint32_t relation, const std::string& key) {
    if (options_.tombstones && !key.empty()) out_->push_back(KafkaRecord{topics_[relation], key, true, ""});
  }

  const ChangeBatch& batch_;
  const DebeziumOptions& options_;
  const int64_t now_ms_;
  std::vector<KafkaRecord>* const out_;
  const bool snapshot_;
  const std::string server_name_;
  std::vector<std::string> topics_;  // by relation
};

void DebeziumRenderer::RenderEvent(size_t i) {
  const ChangeEvent& e = batch_.events[i];
  if (e.op == ChangeOp::kMessage) return;
  if (e.op == ChangeOp::kTruncate) {
    for (uint32_t r : e.truncated) Emit({.event = e, .relation = r, .op = 't'}, "");
    return;
  }
  const ChangeRelation& rel = batch_.relations[e.relation];
  switch (e.op) {
    case ChangeOp::kInsert:
    case ChangeOp::kRead: {
      const bool last = snapshot_ && batch_.last && i + 1 == batch_.events.size();
      const ChangeTuple* after = e.has_after ? &e.after : nullptr;
      Emit({.event = e, .relation = e.relation, .op = static_cast<char>(e.op), .after = after, .last_of_snapshot = last},
           Key(rel, e.after));
      break;
    }
    case ChangeOp::kUpdate:
      RenderUpdate(e, rel);
      break;
    case ChangeOp::kDelete: {
      const std::string key = Key(rel, e.before);
      Emit({.event = e, .relation = e.relation, .op = 'd', .before = e.has_before ? &e.before : nullptr}, key);
      Tombstone(e.relation, key);
      break;
    }
    default:
      break;
  }
}

void DebeziumRenderer::RenderUpdate(const ChangeEvent& e, const ChangeRelation& rel) {
  const ChangeTuple* before = e.has_before ? &e.before : nullptr;
  const ChangeTuple* after = e.has_after ? &e.after : nullptr;
  if (KeyChanged(rel, e)) {
    const std::string old_key = Key(rel, e.before);
    Emit({.event = e, .relation = e.relation, .op = 'd', .before = before}, old_key);
    Tombstone(e.relation, old_key);
    Emit({.event = e, .relation = e.relation, .op = 'c', .after = after}, Key(rel, e.after));
    return;
  }
  // Under DEFAULT identity the old row is not sent; Debezium then writes before: null.
  const ChangeTuple* shown_before = e.has_before && rel.replica_identity == 'f' ? before : nullptr;
  Emit({.event = e, .relation = e.relation, .op = 'u', .before = shown_before, .after = after}, Key(rel, e.after));
}

void DebeziumRenderer::Emit(const Envelope& env, const std::string& key) {
  const ChangeRelation& rel = batch_.relations[env.relation];
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("before");
  Row(w, rel, env.before);
  w.Key("after");
  Row(w, rel, env.after);
  w.Key("source");
  WriteSource(w, env);
  w.Key("op");
  w.String(&env.op, 1);
  w.Key("ts_ms");
  w.Int64(now_ms_);
  w.EndObject();
  out_->push_back(KafkaRecord{topics_[env.relation], key, false, std::string(buf.GetString(), buf.GetSize())});
}

void DebeziumRenderer::WriteSource(JsonWriter& w, const Envelope& env) {
  const ChangeRelation& rel = batch_.relations[env.relation];
  w.StartObject();
  w.Key("version");
  w.String("ferry-1");
  w.Key("connector");
  w.String("postgresql");
  w.Key("name");
  String(w, server_name_);
  w.Key("ts_ms");
  w.Int64(batch_.commit_ts / 1000);
  w.Key("snapshot");
  w.String(!snapshot_ ? "false" : env.last_of_snapshot ? "last" : "true");
  w.Key("db");
  String(w, batch_.database);
  w.Key("schema");
  String(w, rel.schema);
  w.Key("table");
  String(w, rel.table);
  w.Key("txId");
  if (snapshot_) {
    w.Null();
  } else {
    w.Uint(batch_.xid);
  }
  w.Key("lsn");
  w.Uint64(env.event.lsn != 0 ? env.event.lsn : batch_.commit_lsn);
  w.EndObject();
}

}  // namespace

std::string TableTopic(const DebeziumOptions& options, const std::string& schema, const std::string& table) {
  return absl::StrCat(options.topic_prefix, ".", options.source, ".", schema, ".", table);
}

void RenderDebezium(const ChangeBatch& batch, const DebeziumOptions& options, int64_t now_ms,
                    std::vector<KafkaRecord>* out) {
  DebeziumRenderer(batch, options, now_ms, out).Render();
}

}  // namespace ferry::cross_region
