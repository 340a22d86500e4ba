// Applying change events to a standby PostgreSQL: see pg_apply.h for the guarantees.
#include "cross_region/apply/pg_apply.h"

#include <map>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/pg/sql.h"
#include "pipeline/change_event.h"
#include "pipeline/check.h"
#include "pipeline/position.h"
#include "storage/archive.h"

namespace ferry::cross_region {

using client::pg::SqlRow;
using client::pg::SqlRows;
using client::pg::SqlSession;
using pipeline::ChangeBatch;
using pipeline::ChangeColumn;
using pipeline::ChangeEvent;
using pipeline::ChangeOp;
using pipeline::ChangeRelation;
using pipeline::ChangeTuple;
using pipeline::ChangeValue;

namespace {

std::string Qualified(const ChangeRelation& rel) { return SqlSession::Ident(rel.schema, rel.table); }

absl::optional<std::string> Param(const ChangeValue& v) {
  if (v.kind == ChangeValue::Kind::kText) return v.text;
  return absl::nullopt;
}

// One connection's worth of applying.
class Applier {
 public:
  Applier(SqlSession* db, std::string source) : db_(db), source_(std::move(source)) {}

  // Creates the state table if needed; returns the end LSN of the last transaction applied.
  absl::StatusOr<uint64_t> Prepare() {
    FERRY_RETURN_IF_ERROR(db_->Exec("CREATE SCHEMA IF NOT EXISTS ferry"));
    FERRY_RETURN_IF_ERROR(db_->Exec(
        "CREATE TABLE IF NOT EXISTS ferry.apply_state (source text PRIMARY KEY, end_lsn pg_lsn NOT NULL, "
        "applied_at timestamptz NOT NULL)"));
    FERRY_ASSIGN_OR_RETURN(SqlRows rows, db_->Query("SELECT end_lsn FROM ferry.apply_state WHERE source = $1", {source_}));
    if (rows.rows.empty() || !rows.rows[0][0].has_value()) return 0;
    FERRY_ASSIGN_OR_RETURN(pipeline::Lsn lsn, pipeline::Lsn::Parse(*rows.rows[0][0]));
    return lsn.value();
  }

  // One source transaction, in one standby transaction with its end LSN.
  absl::Status Apply(const ChangeBatch& txn) {
    FERRY_RETURN_IF_ERROR(db_->Exec("BEGIN"));
    absl::Status st = ApplyEvents(txn);
    if (st.ok()) {
      st = db_->Exec(
          "INSERT INTO ferry.apply_state VALUES ($1, $2::pg_lsn, now()) "
          "ON CONFLICT (source) DO UPDATE SET end_lsn = excluded.end_lsn, applied_at = excluded.applied_at",
          {source_, pipeline::Lsn(txn.end_lsn).ToString()});
    }
    if (st.ok()) st = db_->Exec("COMMIT");
    if (!st.ok()) {
      (void)db_->Exec("ROLLBACK");
      shapes_.clear();  // any DDL of this transaction is undone too
    }
    return st;
  }

 private:
  absl::Status ApplyEvents(const ChangeBatch& txn) {
    for (const ChangeEvent& e : txn.events) {
      switch (e.op) {
        case ChangeOp::kInsert:
        case ChangeOp::kRead:
          FERRY_RETURN_IF_ERROR(Shape(txn.relations[e.relation]));
          FERRY_RETURN_IF_ERROR(Upsert(txn.relations[e.relation], e.after));
          break;
        case ChangeOp::kUpdate:
          FERRY_RETURN_IF_ERROR(Shape(txn.relations[e.relation]));
          FERRY_RETURN_IF_ERROR(Update(txn.relations[e.relation], e));
          break;
        case ChangeOp::kDelete: {
          const ChangeRelation& rel = txn.relations[e.relation];
          FERRY_RETURN_IF_ERROR(Shape(rel));
          SqlRow params;
          const std::string where = Where(rel, e.before, &params);
          FERRY_RETURN_IF_ERROR(db_->Exec(absl::StrCat("DELETE FROM ", Qualified(rel), " WHERE ", where), params));
          break;
        }
        case ChangeOp::kTruncate: {
          std::vector<std::string> names;
          for (uint32_t r : e.truncated) {
            FERRY_RETURN_IF_ERROR(Shape(txn.relations[r]));
            names.push_back(Qualified(txn.relations[r]));
          }
          FERRY_RETURN_IF_ERROR(db_->Exec(absl::StrCat("TRUNCATE ", absl::StrJoin(names, ", "),
                                                       (e.truncate_options & 2) != 0 ? " RESTART IDENTITY" : "",
                                                       (e.truncate_options & 1) != 0 ? " CASCADE" : "")));
          break;
        }
        case ChangeOp::kMessage:
          break;
      }
    }
    return absl::OkStatus();
  }

  // The standby table has the relation's columns: created, or columns added and dropped.
  absl::Status Shape(const ChangeRelation& rel) {
    // Checked once per shape: every event runs through here.
    auto cached = shapes_.find(std::make_pair(rel.schema, rel.table));
    if (cached != shapes_.end() && std::equal(cached->second.begin(), cached->second.end(), rel.columns.begin(),
                                              rel.columns.end(),
                                              [](const std::string& a, const ChangeColumn& b) { return a == b.name; })) {
      return absl::OkStatus();
    }
    const std::string name = Qualified(rel);
    std::vector<std::string> wanted;
    for (const ChangeColumn& c : rel.columns) wanted.push_back(c.name);
    FERRY_ASSIGN_OR_RETURN(SqlRows have, db_->Query("SELECT a.attname, format_type(a.atttypid, a.atttypmod) "
                                                    "FROM pg_attribute a WHERE a.attrelid = to_regclass($1) "
                                                    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                                                    {name}));
    FERRY_ASSIGN_OR_RETURN(SqlRows exists, db_->Query("SELECT to_regclass($1) IS NOT NULL", {name}));
    if (exists.rows[0][0] != "t") {
      std::vector<std::string> defs, pk;
      for (const ChangeColumn& c : rel.columns) {
        FERRY_ASSIGN_OR_RETURN(std::string type, TypeName(c));
        defs.push_back(absl::StrCat(SqlSession::Ident(c.name), " ", type));
        if (c.primary_key) pk.push_back(SqlSession::Ident(c.name));
      }
      if (!pk.empty()) defs.push_back(absl::StrCat("PRIMARY KEY (", absl::StrJoin(pk, ", "), ")"));
      FERRY_RETURN_IF_ERROR(db_->Exec(absl::StrCat("CREATE SCHEMA IF NOT EXISTS ", SqlSession::Ident(rel.schema))));
      FERRY_RETURN_IF_ERROR(db_->Exec(absl::StrCat("CREATE TABLE ", name, " (", absl::StrJoin(defs, ", "), ")")));
      spdlog::info("event=pg_apply_table_created table={}", name);
    } else {
      std::vector<std::string> present;
      for (const SqlRow& r : have.rows) present.push_back(r[0].value_or(""));
      // A RENAME COLUMN on the primary: at the same position, a name that is gone and one
      // that is new, of the same type. Renamed here too (a drop and an add would lose the
      // column's values).
      for (size_t i = 0; i < std::min(present.size(), wanted.size()); ++i) {
        const bool old_gone = std::find(wanted.begin(), wanted.end(), present[i]) == wanted.end();
        const bool new_absent = std::find(present.begin(), present.end(), wanted[i]) == present.end();
        if (present[i] == wanted[i] || !old_gone || !new_absent) continue;
        FERRY_ASSIGN_OR_RETURN(std::string type, TypeName(rel.columns[i]));
        if (have.rows[i][1].value_or("") != type) continue;
        FERRY_RETURN_IF_ERROR(db_->Exec(absl::StrCat("ALTER TABLE ", name, " RENAME COLUMN ", SqlSession::Ident(present[i]),
                                                     " TO ", SqlSession::Ident(wanted[i]))));
        spdlog::info("event=pg_apply_column_renamed table={} from={} to={}", name, present[i], wanted[i]);
        present[i] = wanted[i];
      }
      for (const ChangeColumn& c : rel.columns) {
        if (std::find(present.begin(), present.end(), c.name) != present.end()) continue;
        FERRY_ASSIGN_OR_RETURN(std::string type, TypeName(c));
        FERRY_RETURN_IF_ERROR(
            db_->Exec(absl::StrCat("ALTER TABLE ", name, " ADD COLUMN ", SqlSession::Ident(c.name), " ", type)));
        spdlog::info("event=pg_apply_column_added table={} column={}", name, c.name);
      }
      for (const std::string& p : present) {
        if (std::find(wanted.begin(), wanted.end(), p) != wanted.end()) continue;
        FERRY_RETURN_IF_ERROR(db_->Exec(absl::StrCat("ALTER TABLE ", name, " DROP COLUMN ", SqlSession::Ident(p))));
        spdlog::info("event=pg_apply_column_dropped table={} column={}", name, p);
      }
    }
    shapes_[std::make_pair(rel.schema, rel.table)] = std::move(wanted);
    return absl::OkStatus();
  }

  // The column's type as the standby spells it: built-in types by OID (the same on every
  // server), others by the name the primary sent (they must exist on the standby).
  absl::StatusOr<std::string> TypeName(const ChangeColumn& c) {
    if (c.type_oid >= pipeline::kFirstNormalObjectId) {
      if (c.type_name.empty()) {
        return absl::FailedPreconditionError(absl::StrCat("column ", c.name, " has type OID ", c.type_oid,
                                                          " without a name; create the table on the standby"));
      }
      return SqlSession::DottedIdent(c.type_name);
    }
    FERRY_ASSIGN_OR_RETURN(SqlRows t, db_->Query("SELECT format_type($1::oid, $2::int)",
                                                 {absl::StrCat(c.type_oid), c.typmod < 0
                                                                                 ? absl::optional<std::string>()
                                                                                 : absl::StrCat(c.typmod)}));
    return t.rows[0][0].value_or("text");
  }

  // The row `t` names (the old row when the change sent one, else the new one), with its
  // values appended to *params: by the replica identity (the primary key under DEFAULT, the
  // unique index under USING INDEX); under FULL by the primary key when there is one (the
  // whole row cannot be compared when it holds json), else one row equal in every column.
  std::string Where(const ChangeRelation& rel, const ChangeTuple& t, SqlRow* params) {
    bool has_pk = false, pk_complete = true, any_key = false;
    for (size_t i = 0; i < rel.columns.size(); ++i) {
      any_key = any_key || rel.columns[i].key;
      if (!rel.columns[i].primary_key) continue;
      has_pk = true;
      pk_complete = pk_complete && t[i].kind == ChangeValue::Kind::kText;
    }
    const bool by_pk = has_pk && pk_complete && (rel.replica_identity == 'f' || !any_key);
    const bool unique = by_pk || rel.replica_identity == 'd' || rel.replica_identity == 'i';
    std::vector<std::string> terms;
    for (size_t i = 0; i < rel.columns.size(); ++i) {
      const ChangeColumn& c = rel.columns[i];
      if (!(by_pk ? c.primary_key : c.key) || t[i].kind == ChangeValue::Kind::kUnchanged) continue;
      params->push_back(Param(t[i]));
      // Key columns are never NULL, and "=" can use their index; other columns may be.
      terms.push_back(absl::StrCat(SqlSession::Ident(c.name), unique ? " = $" : " IS NOT DISTINCT FROM $", params->size()));
    }
    if (unique) return absl::StrJoin(terms, " AND ");
    // Not unique: one of the matching rows, as the primary changed one.
    return absl::StrCat("ctid = (SELECT ctid FROM ", Qualified(rel), " WHERE ", absl::StrJoin(terms, " AND "),
                        " LIMIT 1)");
  }

  absl::Status Upsert(const ChangeRelation& rel, const ChangeTuple& row) {
    std::vector<std::string> cols, values, pk, set;
    SqlRow params;
    for (size_t i = 0; i < rel.columns.size(); ++i) {
      const std::string col = SqlSession::Ident(rel.columns[i].name);
      cols.push_back(col);
      params.push_back(Param(row[i]));
      values.push_back(absl::StrCat("$", params.size()));
      if (rel.columns[i].primary_key) {
        pk.push_back(col);
      } else {
        set.push_back(absl::StrCat(col, " = EXCLUDED.", col));
      }
    }
    std::string sql = absl::StrCat("INSERT INTO ", Qualified(rel), " (", absl::StrJoin(cols, ", "), ") VALUES (",
                                   absl::StrJoin(values, ", "), ")");
    if (!pk.empty()) {
      absl::StrAppend(&sql, " ON CONFLICT (", absl::StrJoin(pk, ", "), ") DO ",
                      set.empty() ? "NOTHING" : absl::StrCat("UPDATE SET ", absl::StrJoin(set, ", ")));
    }
    return db_->Exec(sql, params);
  }

  absl::Status Update(const ChangeRelation& rel, const ChangeEvent& e) {
    std::vector<std::string> set;
    SqlRow params;
    bool unchanged = false;
    for (size_t i = 0; i < rel.columns.size(); ++i) {
      // An unchanged TOAST value: the standby keeps the one it has.
      if (e.after[i].kind == ChangeValue::Kind::kUnchanged) {
        unchanged = true;
        continue;
      }
      params.push_back(Param(e.after[i]));
      set.push_back(absl::StrCat(SqlSession::Ident(rel.columns[i].name), " = $", params.size()));
    }
    // The old key when it changed (or the whole old row under FULL), else the new row's key.
    const std::string where = Where(rel, e.has_before ? e.before : e.after, &params);
    FERRY_RETURN_IF_ERROR(db_->Exec(absl::StrCat("UPDATE ", Qualified(rel), " SET ", absl::StrJoin(set, ", "),
                                                 " WHERE ", where),
                                    params));
    if (db_->affected() > 0) return absl::OkStatus();
    if (unchanged) {
      return absl::FailedPreconditionError(absl::StrCat("update of a row of ", Qualified(rel),
                                                        " that the standby does not have, with values it would need"));
    }
    return Upsert(rel, e.after);
  }

  SqlSession* const db_;
  const std::string source_;
  // (schema, table) -> its columns as last checked
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> shapes_;
};

}  // namespace

std::unique_ptr<PgApplier> PgApplier::Start(PgApplyOptions options) {
  std::unique_ptr<PgApplier> a(new PgApplier(std::move(options)));
  a->thread_ = std::thread([p = a.get()] { p->Run(); });
  return a;
}

PgApplier::~PgApplier() { Stop(); }

void PgApplier::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void PgApplier::Run() {
  absl::StatusCode last = absl::StatusCode::kOk;
  while (!stop_) {
    absl::Status st = Session();
    if (stop_) return;
    // Logged once per kind of trouble, not per retry.
    if (st.code() != last) {
      spdlog::warn("event=pg_apply_retrying error=\"{}\"", std::string(st.message()));
      last = st.code();
    }
    for (int i = 0; i < 20 && !stop_; ++i) absl::SleepFor(absl::Milliseconds(100));
  }
}

absl::Status PgApplier::Session() {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<storage::Archive> archive,
                         storage::Archive::Open(options_.archive_path, storage::ArchiveOptions{}));
  std::string source = options_.source;
  storage::StreamLog* log = nullptr;
  for (const std::string& s : source.empty() ? options_.sources : std::vector<std::string>{source}) {
    auto found = archive->Stream(s, pipeline::StreamKind::kPgChanges);
    if (found.ok()) {
      source = s;
      log = *found;
      break;
    }
  }
  if (log == nullptr) return absl::UnavailableError("no change events mirrored yet");
  // The same text forms as the primary's logical session (ISO dates, UTC).
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<SqlSession> db,
                         SqlSession::Connect(options_.conninfo, client::pg::kCanonicalTextOptions));
  // As PostgreSQL's own apply workers: no triggers or foreign-key actions fire twice.
  if (absl::Status st = db->Exec("SET session_replication_role = replica"); !st.ok()) {
    spdlog::warn("event=pg_apply_note note=\"triggers stay on: {}\"", std::string(st.message()));
  }
  Applier applier(db.get(), source);
  FERRY_ASSIGN_OR_RETURN(uint64_t applied, applier.Prepare());
  spdlog::info("event=pg_apply_started source={} applied_lsn={}", source, pipeline::Lsn(applied).ToString());
  stats_.applied_lsn = applied;

  pipeline::ChangeAssembler assembler;
  std::string scratch;
  size_t next = 0;
  // Frames that end at or before the last applied commit hold nothing new.
  const uint64_t applied_pos = pipeline::ChangePosition(applied, 0);
  while (next < log->frames().size() && log->frames()[next].header.end_pos <= applied_pos) ++next;
  while (!stop_) {
    FERRY_RETURN_IF_ERROR(log->Refresh());
    const size_t before = next;
    for (; next < log->frames().size() && !stop_; ++next) {
      FERRY_ASSIGN_OR_RETURN(std::vector<pipeline::RecordView> records, log->ReadRecords(log->frames()[next], &scratch));
      for (const pipeline::RecordView& r : records) {
        ChangeBatch txn;
        FERRY_ASSIGN_OR_RETURN(bool complete, assembler.Add(r.payload, &txn));
        if (!complete || txn.end_lsn <= applied) continue;
        FERRY_RETURN_IF_ERROR(applier.Apply(txn));
        applied = txn.end_lsn;
        stats_.applied_lsn = applied;
        stats_.transactions.fetch_add(1, std::memory_order_relaxed);
        stats_.events.fetch_add(txn.events.size(), std::memory_order_relaxed);
      }
    }
    if (next == before) absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::OkStatus();
}

}  // namespace ferry::cross_region
