// Logical streaming: publication and slot set-up, the initial snapshot, pgoutput decoding into
// change records, reassembly of streamed transactions, and feedback. Protocol facts:
// docs/protocols.md, "Streaming messages" and "pgoutput".
#include "ingest/pg/logical_source.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/pg/server_version.h"
#include "ingest/pg/copy_loop.h"
#include "ingest/pg/pgoutput.h"
#include "ingest/pg/spill_file.h"
#include "pipeline/check.h"

namespace ferry::ingest::pg {

using pipeline::ChangeBatch;
using pipeline::ChangeEvent;
using pipeline::ChangeOp;
using pipeline::ChangeRelation;
using pipeline::ChangeValue;
using pipeline::Lsn;

namespace {

size_t TupleBytes(const pipeline::ChangeTuple& t) {
  size_t n = 0;
  for (const ChangeValue& v : t) n += 5 + v.text.size();
  return n;
}

}  // namespace

// One change of a transaction being collected.
struct PgLogicalSource::Change {
  uint32_t subxid = 0;  // streamed transactions: the sub-transaction, for Stream Abort
  size_t bytes = 0;     // about what it takes in a record
  std::shared_ptr<const ChangeRelation> relation;
  std::vector<std::shared_ptr<const ChangeRelation>> truncated;
  ChangeEvent event;
};

// A transaction being collected: from Begin to Commit, or a streamed one until Stream Commit.
struct PgLogicalSource::Txn {
  ChangeBatch::Kind kind = ChangeBatch::Kind::kTransaction;
  uint32_t xid = 0;
  uint64_t commit_lsn = 0;
  pipeline::UnixMicros commit_ts = 0;
  bool skip = false;     // archived before a restart: the server sent it again
  bool started = false;  // its first record is appended
  std::vector<Change> changes;
  size_t bytes = 0;
  // A streamed transaction's earlier changes, in encoded parts, until its commit (nullptr
  // while it fits in memory); with each spilled event's sub-transaction, and the
  // sub-transactions aborted since, whose events are dropped when the parts are read back.
  std::unique_ptr<SpillFile> spill;
  std::vector<uint32_t> spilled_subxids;
  std::set<uint32_t> aborted_subxids;
};

PgLogicalSource::PgLogicalSource(PgLogicalOptions options, pipeline::StreamSink* sink)
    : options_(std::move(options)), sink_(sink) {
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  FERRY_CHECK(stop_fd_ >= 0);
}

PgLogicalSource::~PgLogicalSource() { close(stop_fd_); }

bool PgLogicalSource::StopRequested() const {
  pollfd p{stop_fd_, POLLIN, 0};
  return poll(&p, 1, 0) > 0;  // the event stays for the streaming loop to read
}

void PgLogicalSource::RequestStop() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(stop_fd_, &one, sizeof(one));
}

absl::Status PgLogicalSource::Connect() {
  FERRY_ASSIGN_OR_RETURN(conn_, client::pg::ReplicationConnection::Connect(options_.conninfo, options_.application_name,
                                                               /*logical=*/true, client::pg::kCanonicalTextOptions));
  FERRY_RETURN_IF_ERROR(client::pg::SupportedMajor(conn_->ServerVersion()).status());
  FERRY_ASSIGN_OR_RETURN(sql_, client::pg::SqlSession::Connect(options_.conninfo, client::pg::kCanonicalTextOptions));
  FERRY_ASSIGN_OR_RETURN(client::pg::SqlRows db, sql_->Query("SELECT current_database()"));
  database_ = db.rows.at(0).at(0).value_or("");
  FERRY_ASSIGN_OR_RETURN(client::pg::SqlRows pub, sql_->Query("SELECT 1 FROM pg_publication WHERE pubname = $1",
                                                  {options_.publication}));
  if (pub.rows.empty()) {
    // Created before the slot: pgoutput reads publications through the historic catalog, so a
    // slot older than its publication fails on its first change (docs/protocols.md, "Creating slots").
    std::string what = "FOR ALL TABLES";
    if (!options_.tables.empty()) {
      std::vector<std::string> quoted;
      for (const std::string& t : options_.tables) quoted.push_back(client::pg::SqlSession::DottedIdent(t, "public"));
      what = absl::StrCat("FOR TABLE ", absl::StrJoin(quoted, ", "));
    }
    FERRY_RETURN_IF_ERROR(sql_->Exec(absl::StrCat("CREATE PUBLICATION ", client::pg::SqlSession::Ident(options_.publication), " ", what)));
    spdlog::info("event=publication_created publication={} tables=\"{}\"", options_.publication, what);
  }
  return absl::OkStatus();
}

ChangeBatch PgLogicalSource::TakeBatch(Txn* txn) {
  ChangeBatch b;
  // Each record carries the relations its events use (as they were at the change), so it
  // can be read alone.
  std::map<const ChangeRelation*, uint32_t> index;
  auto relation_index = [&](const std::shared_ptr<const ChangeRelation>& r) {
    auto [it, added] = index.emplace(r.get(), static_cast<uint32_t>(b.relations.size()));
    if (added) b.relations.push_back(*r);
    return it->second;
  };
  b.events.reserve(txn->changes.size());
  for (Change& c : txn->changes) {
    if (c.relation != nullptr) c.event.relation = relation_index(c.relation);
    for (const auto& t : c.truncated) c.event.truncated.push_back(relation_index(t));
    b.events.push_back(std::move(c.event));
  }
  txn->changes.clear();
  txn->bytes = 0;
  return b;
}

absl::Status PgLogicalSource::EmitPart(Txn* txn, bool last, uint64_t end_lsn) {
  return AppendBatch(txn, TakeBatch(txn), last, end_lsn);
}

absl::Status PgLogicalSource::AppendBatch(Txn* txn, ChangeBatch b, bool last, uint64_t end_lsn) {
  b.kind = txn->kind;
  b.first = !txn->started;
  b.last = last;
  b.xid = txn->xid;
  b.commit_lsn = txn->commit_lsn;
  b.end_lsn = last ? end_lsn : 0;
  b.commit_ts = txn->commit_ts;
  b.database = database_;
  uint64_t pos;
  if (last) {
    if (end_lsn > pipeline::kMaxChangeLsn) {
      return absl::FailedPreconditionError(absl::StrCat("LSN ", Lsn(end_lsn).ToString(),
                                                        " is beyond what the pg-changes stream can position"));
    }
    pos = pipeline::ChangePosition(end_lsn, 0);
  } else {
    if ((tail_pos_ & ((uint64_t{1} << pipeline::kChangePartBits) - 1)) == (uint64_t{1} << pipeline::kChangePartBits) - 1) {
      return absl::ResourceExhaustedError(absl::StrCat(
          txn->kind == ChangeBatch::Kind::kSnapshot ? "the initial snapshot" : absl::StrCat("transaction ", txn->xid),
          " needs more than 65535 records (about 64 GiB of changes, 1 TiB of snapshot): too large for one pg-changes "
          "transaction"));
    }
    pos = tail_pos_ + 1;
  }
  if (pos <= tail_pos_) {
    return absl::DataLossError(absl::StrCat("transaction ", txn->xid, " ends at ", Lsn(end_lsn).ToString(),
                                            ", not after the stream's end ",
                                            Lsn(pipeline::ChangePositionLsn(tail_pos_)).ToString()));
  }
  pipeline::Record rec;
  rec.end_pos = pos;
  rec.data_ts = txn->commit_ts;
  rec.payload = pipeline::EncodeChangeBatch(b);
  stats_.events.fetch_add(b.events.size(), std::memory_order_relaxed);
  FERRY_RETURN_IF_ERROR(sink_->Append({kEpoch, tail_pos_}, std::move(rec)));
  tail_pos_ = pos;
  txn->started = true;
  return absl::OkStatus();
}

absl::Status PgLogicalSource::Spill(Txn* txn) {
  if (txn->spill == nullptr) {
    FERRY_ASSIGN_OR_RETURN(txn->spill, SpillFile::Create());
    spdlog::info("event=transaction_spilled xid={} reason=\"streamed before its commit, larger than {} bytes\"",
                 txn->xid, options_.max_record_bytes);
  }
  for (const Change& c : txn->changes) txn->spilled_subxids.push_back(c.subxid);
  return txn->spill->Append(pipeline::EncodeChangeBatch(TakeBatch(txn)));
}

absl::Status PgLogicalSource::EmitSpilled(Txn* txn) {
  size_t next = 0;  // index into spilled_subxids
  FERRY_RETURN_IF_ERROR(txn->spill->ForEach([&](absl::string_view part) -> absl::Status {
    FERRY_ASSIGN_OR_RETURN(ChangeBatch b, pipeline::DecodeChangeBatch(part));
    if (next + b.events.size() > txn->spilled_subxids.size()) {
      return absl::DataLossError(absl::StrCat("transaction ", txn->xid, ": its spill file has more events than spilled"));
    }
    std::vector<ChangeEvent> kept;
    kept.reserve(b.events.size());
    for (ChangeEvent& e : b.events) {
      if (txn->aborted_subxids.count(txn->spilled_subxids[next++]) == 0) kept.push_back(std::move(e));
    }
    if (kept.empty()) return absl::OkStatus();
    b.events = std::move(kept);
    return AppendBatch(txn, std::move(b), false, 0);
  }));
  txn->spill.reset();
  txn->spilled_subxids.clear();
  return absl::OkStatus();
}

absl::Status PgLogicalSource::ReadTable(const std::string& schema, const std::string& table, Txn* txn) {
  // The columns pgoutput would describe: live, not generated, in order, with the replica
  // identity's key flags (DEFAULT: the primary key; INDEX: that index; FULL: every column).
  FERRY_ASSIGN_OR_RETURN(
      client::pg::SqlRows cols,
      sql_->Query(
          "SELECT c.oid, c.relreplident, a.attname, a.atttypid, a.atttypmod, "
          "  CASE WHEN t.oid >= 16384 THEN tn.nspname || '.' || t.typname ELSE '' END, "
          "  c.relreplident = 'f' OR a.attnum = ANY(coalesce((SELECT i.indkey::int2[] FROM pg_index i "
          "    WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'i' THEN i.indisreplident "
          "    WHEN 'd' THEN i.indisprimary ELSE false END LIMIT 1), '{}')), "
          "  a.attnum = ANY(coalesce((SELECT i.indkey::int2[] FROM pg_index i WHERE i.indrelid = c.oid "
          "    AND i.indisprimary), '{}')) "
          "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
          "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
          "JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace "
          "WHERE n.nspname = $1 AND c.relname = $2 ORDER BY a.attnum",
          {schema, table}));
  if (cols.rows.empty()) return absl::OkStatus();
  auto rel = std::make_shared<ChangeRelation>();
  rel->relid = static_cast<uint32_t>(std::stoul(*cols.rows[0][0]));
  rel->schema = schema;
  rel->table = table;
  rel->replica_identity = cols.rows[0][1]->empty() ? 'd' : (*cols.rows[0][1])[0];
  std::vector<std::string> select;
  for (const client::pg::SqlRow& r : cols.rows) {
    pipeline::ChangeColumn c;
    c.name = *r[2];
    c.type_oid = static_cast<uint32_t>(std::stoul(*r[3]));
    c.typmod = std::stoi(*r[4]);
    c.type_name = *r[5];
    c.key = *r[6] == "t";
    c.primary_key = *r[7] == "t";
    select.push_back(client::pg::SqlSession::Ident(c.name));
    rel->columns.push_back(std::move(c));
  }
  std::shared_ptr<const ChangeRelation> shared = rel;
  FERRY_RETURN_IF_ERROR(sql_->Exec(absl::StrCat("DECLARE ferry_snapshot NO SCROLL CURSOR FOR SELECT ",
                                                absl::StrJoin(select, ", "), " FROM ONLY ",
                                                client::pg::SqlSession::Ident(schema, table))));
  const std::string fetch = absl::StrCat("FETCH ", options_.snapshot_fetch_rows, " FROM ferry_snapshot");
  while (true) {
    if (StopRequested()) return absl::CancelledError("stopped while reading the initial snapshot");
    FERRY_ASSIGN_OR_RETURN(client::pg::SqlRows rows, sql_->Query(fetch));
    if (rows.rows.empty()) break;
    for (client::pg::SqlRow& row : rows.rows) {
      Change c;
      c.relation = shared;
      c.event.op = ChangeOp::kRead;
      c.event.has_after = true;
      for (auto& v : row) {
        ChangeValue cv;
        if (v.has_value()) {
          cv.kind = ChangeValue::Kind::kText;
          cv.text = std::move(*v);
        }
        c.event.after.push_back(std::move(cv));
      }
      txn->bytes += TupleBytes(c.event.after);
      txn->changes.push_back(std::move(c));
      stats_.snapshot_rows.fetch_add(1, std::memory_order_relaxed);
      // Snapshot parts are larger: a part number has 16 bits, and 65535 parts of 16 MiB
      // cover a 1 TiB database.
      if (txn->bytes >= 16 * options_.max_record_bytes) FERRY_RETURN_IF_ERROR(EmitPart(txn, false, 0));
    }
  }
  return sql_->Exec("CLOSE ferry_snapshot");
}

absl::Status PgLogicalSource::TakeSnapshot(const client::pg::LogicalSlotCreated& slot) {
  for (char ch : slot.snapshot_name) {
    if (!absl::ascii_isxdigit(ch) && ch != '-') {
      return absl::DataLossError(absl::StrCat("unexpected snapshot name \"", slot.snapshot_name, "\""));
    }
  }
  FERRY_RETURN_IF_ERROR(sql_->Exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
  FERRY_RETURN_IF_ERROR(sql_->Exec(absl::StrCat("SET TRANSACTION SNAPSHOT '", slot.snapshot_name, "'")));
  FERRY_ASSIGN_OR_RETURN(client::pg::SqlRows tables, sql_->Query("SELECT schemaname, tablename FROM pg_publication_tables "
                                                     "WHERE pubname = $1 ORDER BY 1, 2",
                                                     {options_.publication}));
  Txn txn;
  txn.kind = ChangeBatch::Kind::kSnapshot;
  txn.commit_lsn = slot.consistent_point.value();
  txn.commit_ts = pipeline::NowUnixMicros();
  for (const client::pg::SqlRow& t : tables.rows) FERRY_RETURN_IF_ERROR(ReadTable(*t[0], *t[1], &txn));
  FERRY_RETURN_IF_ERROR(sql_->Exec("COMMIT"));
  // The last record ends at the consistent point: every change after it comes from the slot.
  FERRY_RETURN_IF_ERROR(EmitPart(&txn, true, slot.consistent_point.value()));
  spdlog::info("event=logical_snapshot slot={} tables={} rows={} consistent_point={}", options_.slot,
               tables.rows.size(), stats_.snapshot_rows.load(), slot.consistent_point.ToString());
  return absl::OkStatus();
}

uint64_t PgLogicalSource::ConfirmableLsn() const {
  const uint64_t acked = sink_->progress().Acked();
  uint64_t lsn = pipeline::ChangePositionLsn(acked);
  // Idle (no transaction open, everything appended acknowledged): the server's own position
  // may be confirmed, so a slot whose tables see no changes does not hold WAL forever.
  if (open_ == nullptr && streamed_.empty() && acked >= tail_pos_) lsn = std::max(lsn, idle_lsn_);
  return lsn;
}

absl::Status PgLogicalSource::SendFeedback(bool reply_requested) {
  const uint64_t flushed = ConfirmableLsn();
  FERRY_RETURN_IF_ERROR(conn_->SendStatus(Lsn(flushed), Lsn(flushed), Lsn(flushed), reply_requested));
  last_sent_flush_ = flushed;
  stats_.reported_flush_lsn.store(flushed, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status PgLogicalSource::Handle(absl::string_view payload, uint64_t lsn) {
  FERRY_ASSIGN_OR_RETURN(PgOutputMessage m, ParsePgOutput(payload, in_stream_));
  switch (m.type) {
    case 'B':
      return OnBegin(m);
    case 'C': {
      if (open_ == nullptr) return absl::DataLossError("pgoutput Commit without Begin");
      FERRY_RETURN_IF_ERROR(CommitTxn(std::move(open_), m));
      open_.reset();
      return absl::OkStatus();
    }
    case 'O':  // replication origin of the transaction: nothing to keep
      return absl::OkStatus();
    case 'Y':
      type_names_[m.type_oid] = absl::StrCat(m.type_namespace, ".", m.type_name);
      return absl::OkStatus();
    case 'R':
      return OnRelation(m);
    case 'I':
    case 'U':
    case 'D':
      return OnRowChange(m, lsn);
    case 'T':
      return OnTruncate(m, lsn);
    case 'M':
      return OnLogicalMessage(m);
    case 'S':
      in_stream_ = true;
      stream_xid_ = m.xid;
      return absl::OkStatus();
    case 'E':
      in_stream_ = false;
      return absl::OkStatus();
    case 'c':
      return OnStreamCommit(m);
    case 'A':
      return OnStreamAbort(m);
    default:
      // Two-phase messages: two_phase is never switched on (it would change the slot for good).
      return absl::DataLossError(absl::StrCat("unexpected pgoutput message '", std::string(1, m.type), "'"));
  }
}

absl::StatusOr<PgLogicalSource::Txn*> PgLogicalSource::CurrentTxn(char type) {
  if (in_stream_) {
    auto& t = streamed_[stream_xid_];
    if (t == nullptr) {
      t = std::make_unique<Txn>();
      t->xid = stream_xid_;
    }
    return t.get();
  }
  if (open_ == nullptr) {
    return absl::DataLossError(absl::StrCat("pgoutput '", std::string(1, type), "' outside a transaction"));
  }
  return open_.get();
}

absl::StatusOr<std::shared_ptr<const ChangeRelation>> PgLogicalSource::FindRelation(uint32_t relid) const {
  auto it = relations_.find(relid);
  if (it == relations_.end()) {
    return absl::DataLossError(absl::StrCat("pgoutput change for relation ", relid, " before its Relation message"));
  }
  return it->second;
}

absl::Status PgLogicalSource::AddChange(Txn* txn, uint32_t subxid, Change&& c) {
  if (txn->skip) return absl::OkStatus();
  c.subxid = subxid;
  c.bytes = 32 + TupleBytes(c.event.before) + TupleBytes(c.event.after) + c.event.content.size();
  txn->bytes += c.bytes;
  txn->changes.push_back(std::move(c));
  // A plain transaction goes out in parts as it grows; a streamed one waits for its commit
  // (it may still abort), its parts kept in a spill file meanwhile, and goes out whole then.
  if (txn->bytes < options_.max_record_bytes) return absl::OkStatus();
  return in_stream_ ? Spill(txn) : EmitPart(txn, false, 0);
}

absl::Status PgLogicalSource::CommitTxn(std::unique_ptr<Txn> txn, const PgOutputMessage& m) {
  txn->commit_lsn = m.commit_lsn;
  txn->commit_ts = m.ts;
  stats_.received_lsn.store(m.end_lsn, std::memory_order_relaxed);
  // Committed before the archive's end: this server sent it again after a restart.
  if (txn->skip || m.commit_lsn < skip_below_lsn_) return absl::OkStatus();
  stats_.transactions.fetch_add(1, std::memory_order_relaxed);
  if (txn->spill != nullptr) {
    // What was spilled comes first (without aborted sub-transactions), then what is in memory.
    FERRY_RETURN_IF_ERROR(EmitSpilled(txn.get()));
  }
  if (txn->bytes > options_.max_record_bytes) {
    // A streamed transaction arrives whole at its commit: out in parts of the usual size.
    std::vector<Change> all = std::move(txn->changes);
    txn->changes.clear();
    txn->bytes = 0;
    for (Change& c : all) {
      txn->bytes += c.bytes;
      txn->changes.push_back(std::move(c));
      if (txn->bytes >= options_.max_record_bytes) FERRY_RETURN_IF_ERROR(EmitPart(txn.get(), false, 0));
    }
  }
  return EmitPart(txn.get(), true, m.end_lsn);
}

absl::Status PgLogicalSource::OnBegin(const PgOutputMessage& m) {
  open_ = std::make_unique<Txn>();
  open_->xid = m.xid;
  open_->commit_lsn = m.commit_lsn;
  open_->commit_ts = m.ts;
  open_->skip = m.commit_lsn < skip_below_lsn_;
  return absl::OkStatus();
}

absl::Status PgLogicalSource::OnRelation(PgOutputMessage& m) {
  auto rel = std::make_shared<ChangeRelation>(std::move(m.relation));
  for (pipeline::ChangeColumn& c : rel->columns) {
    if (c.type_oid < pipeline::kFirstNormalObjectId) continue;
    auto it = type_names_.find(c.type_oid);
    if (it != type_names_.end()) c.type_name = it->second;
  }
  // The Kafka key is the primary key; pgoutput flags the replica identity, which is the
  // same only under DEFAULT.
  if (rel->replica_identity == 'd') {
    for (pipeline::ChangeColumn& c : rel->columns) c.primary_key = c.key;
  } else {
    FERRY_ASSIGN_OR_RETURN(
        client::pg::SqlRows pk, sql_->Query("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                                "AND a.attnum = ANY(i.indkey::int2[]) WHERE i.indrelid = $1::oid AND i.indisprimary",
                                {absl::StrCat(rel->relid)}));
    for (pipeline::ChangeColumn& c : rel->columns) {
      for (const client::pg::SqlRow& row : pk.rows) c.primary_key = c.primary_key || row[0] == c.name;
    }
  }
  // Events already collected keep the shape they were made with.
  relations_[rel->relid] = std::move(rel);
  return absl::OkStatus();
}

absl::Status PgLogicalSource::OnRowChange(PgOutputMessage& m, uint64_t lsn) {
  FERRY_ASSIGN_OR_RETURN(Txn * txn, CurrentTxn(m.type));
  Change c;
  FERRY_ASSIGN_OR_RETURN(c.relation, FindRelation(m.relid));
  const size_t ncols = c.relation->columns.size();
  c.event.op = m.type == 'I' ? ChangeOp::kInsert : m.type == 'U' ? ChangeOp::kUpdate : ChangeOp::kDelete;
  c.event.lsn = lsn;
  c.event.has_before = m.old_kind != 0;
  c.event.before = std::move(m.old_tuple);
  c.event.has_after = m.has_new;
  c.event.after = std::move(m.new_tuple);
  if ((c.event.has_before && c.event.before.size() != ncols) || (c.event.has_after && c.event.after.size() != ncols)) {
    return absl::DataLossError(absl::StrCat("pgoutput row of relation ", m.relid, " does not match its ", ncols,
                                            " columns"));
  }
  return AddChange(txn, m.xid, std::move(c));
}

absl::Status PgLogicalSource::OnTruncate(const PgOutputMessage& m, uint64_t lsn) {
  FERRY_ASSIGN_OR_RETURN(Txn * txn, CurrentTxn(m.type));
  Change c;
  c.event.op = ChangeOp::kTruncate;
  c.event.lsn = lsn;
  c.event.truncate_options = m.truncate_options;
  for (uint32_t relid : m.truncate_relids) {
    FERRY_ASSIGN_OR_RETURN(auto r, FindRelation(relid));
    c.truncated.push_back(std::move(r));
  }
  return AddChange(txn, m.xid, std::move(c));
}

absl::Status PgLogicalSource::OnLogicalMessage(PgOutputMessage& m) {
  if (!m.transactional) return absl::OkStatus();  // not requested (messages is off)
  FERRY_ASSIGN_OR_RETURN(Txn * txn, CurrentTxn(m.type));
  Change c;
  c.event.op = ChangeOp::kMessage;
  c.event.lsn = m.message_lsn;
  c.event.prefix = std::move(m.prefix);
  c.event.content = std::move(m.content);
  return AddChange(txn, m.xid, std::move(c));
}

absl::Status PgLogicalSource::OnStreamCommit(const PgOutputMessage& m) {
  auto it = streamed_.find(m.xid);
  std::unique_ptr<Txn> txn = it == streamed_.end() ? std::make_unique<Txn>() : std::move(it->second);
  if (it != streamed_.end()) streamed_.erase(it);
  txn->xid = m.xid;
  return CommitTxn(std::move(txn), m);
}

absl::Status PgLogicalSource::OnStreamAbort(const PgOutputMessage& m) {
  auto it = streamed_.find(m.xid);
  if (it == streamed_.end()) return absl::OkStatus();
  if (m.subxid == m.xid) {
    streamed_.erase(it);
  } else {
    Txn& txn = *it->second;
    auto of_subxact = [&](const Change& c) { return c.subxid == m.subxid; };
    for (const Change& c : txn.changes) txn.bytes -= of_subxact(c) ? c.bytes : 0;
    txn.changes.erase(std::remove_if(txn.changes.begin(), txn.changes.end(), of_subxact), txn.changes.end());
    // Its spilled events are dropped when the parts are read back at the commit.
    if (txn.spill != nullptr) txn.aborted_subxids.insert(m.subxid);
  }
  return absl::OkStatus();
}

absl::StatusOr<Lsn> PgLogicalSource::PrepareSlot() {
  // A catalog read that waits on no lock: silence means a stalled connection (a reconnect
  // runs it). The session's other statements (publication, snapshot) may wait on locks for
  // long, so only this one is bounded.
  sql_->set_silence_ms(client::pg::kServerSilenceMs);
  absl::StatusOr<client::pg::SqlRows> slot_rows = sql_->Query("SELECT plugin, confirmed_flush_lsn FROM pg_replication_slots "
                                                  "WHERE slot_name = $1",
                                                  {options_.slot});
  sql_->set_silence_ms(0);
  FERRY_ASSIGN_OR_RETURN(client::pg::SqlRows slot, std::move(slot_rows));
  const bool have_snapshot = skip_below_lsn_ != 0;
  if (!slot.rows.empty() && slot.rows[0][0].value_or("") != "pgoutput") {
    return absl::FailedPreconditionError(absl::StrCat("replication slot \"", options_.slot,
                                                      "\" is not a pgoutput logical slot; name another logical_slot"));
  }
  if (!slot.rows.empty() && !have_snapshot) {
    if (!options_.create_slot) {
      return absl::FailedPreconditionError(absl::StrCat(
          "logical slot \"", options_.slot, "\" exists but the archive has no initial snapshot from it; ",
          "drop the slot (ferry then makes it with its snapshot) or set create_slot = true"));
    }
    // The slot was made but its snapshot never completed in the archive: start both again.
    spdlog::warn("event=logical_slot_recreated slot={} reason=\"the archive has no complete initial snapshot\"",
                 options_.slot);
    FERRY_RETURN_IF_ERROR(conn_->DropSlot(options_.slot));
    slot.rows.clear();
  }
  if (!slot.rows.empty()) return Lsn(skip_below_lsn_);
  if (have_snapshot) {
    return absl::FailedPreconditionError(absl::StrCat(
        "logical slot \"", options_.slot, "\" is gone but the archive's changes end at ",
        Lsn(skip_below_lsn_).ToString(), ": changes since are lost. Move the pg-changes stream aside to start over"));
  }
  if (!options_.create_slot) {
    return absl::FailedPreconditionError(
        absl::StrCat("logical slot \"", options_.slot, "\" does not exist: create it or set create_slot = true"));
  }
  FERRY_ASSIGN_OR_RETURN(client::pg::LogicalSlotCreated created, conn_->CreateLogicalSlot(options_.slot, options_.slot_failover));
  FERRY_RETURN_IF_ERROR(TakeSnapshot(created));
  return created.consistent_point;
}

std::string PgLogicalSource::StreamOptions() const {
  const int version = conn_->ServerVersion();
  // The highest protocol each major speaks: 2 (14) streams large transactions before they
  // commit, 3 (15) adds two-phase, 4 (16+) parallel streaming, whose stream aborts carry
  // their LSN and time. Streamed changes are held until their commit either way.
  const int proto = version >= 160000 ? 4 : version >= 150000 ? 3 : 2;
  std::string pub;  // publication_names takes identifiers inside a string literal
  for (char ch : client::pg::SqlSession::Ident(options_.publication)) {
    pub += ch;
    if (ch == '\'') pub += ch;
  }
  std::string opts = absl::StrCat("proto_version '", proto, "', publication_names '", pub, "'");
  absl::StrAppend(&opts, proto >= 4 ? ", streaming 'parallel'" : ", streaming 'on'");
  return opts;
}

absl::Status PgLogicalSource::Stream(uint64_t archive_end) {
  FERRY_CHECK(conn_ != nullptr);
  tail_pos_ = archive_end;
  skip_below_lsn_ = pipeline::ChangePositionLsn(archive_end);
  FERRY_ASSIGN_OR_RETURN(const Lsn start, PrepareSlot());
  const std::string opts = StreamOptions();
  // Asked before the COPY starts: no other command can run during it.
  FERRY_ASSIGN_OR_RETURN(const int64_t sender_timeout_ms, conn_->SenderTimeoutMillis());
  FERRY_RETURN_IF_ERROR(conn_->StartLogical(options_.slot, start, opts));
  idle_lsn_ = 0;

  CopyLoop loop(conn_.get(), sink_, stop_fd_, options_.status_interval_ms, sender_timeout_ms);
  while (true) {
    FERRY_ASSIGN_OR_RETURN(const bool stop, loop.Wait([this](bool ask) { return SendFeedback(ask); },
                                                      [this] { return ConfirmableLsn() > last_sent_flush_; }));
    if (stop) {
      FERRY_RETURN_IF_ERROR(sink_->Drain());
      FERRY_RETURN_IF_ERROR(SendFeedback());
      return conn_->EndCopy();
    }
    FERRY_RETURN_IF_ERROR(ReadMessages(loop.silence(), loop.burst_bytes()));
    // After draining what arrived: a server that answered nothing for so long is gone.
    FERRY_RETURN_IF_ERROR(loop.CheckSilence());
  }
}

absl::Status PgLogicalSource::ReadMessages(client::pg::SilenceWatch& silence, size_t* burst_bytes) {
  while (true) {
    FERRY_ASSIGN_OR_RETURN(client::pg::CopyMessage m, conn_->ReadMessage());
    if (m.kind == client::pg::CopyMessage::Kind::kNone) return absl::OkStatus();
    silence.Heard(client::pg::MonotonicMillis());
    *burst_bytes += m.payload.size();
    if (m.kind == client::pg::CopyMessage::Kind::kCopyDone) {
      absl::Status ended = conn_->FinishTimeline().status();
      return absl::UnavailableError(absl::StrCat("logical streaming ended by the server: ", ended.message()));
    }
    if (m.kind == client::pg::CopyMessage::Kind::kKeepalive) {
      idle_lsn_ = std::max(idle_lsn_, m.wal_end.value());
      if (m.reply_requested || ConfirmableLsn() > last_sent_flush_) FERRY_RETURN_IF_ERROR(SendFeedback());
      continue;
    }
    FERRY_RETURN_IF_ERROR(Handle(m.payload, m.data_start.value()));
  }
}

}  // namespace ferry::ingest::pg
