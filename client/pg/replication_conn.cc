// libpq replication connection. Message layouts: docs/protocols.md, "Streaming messages".
#include "client/pg/replication_conn.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/pg/sql.h"
#include "pipeline/check.h"
#include "pipeline/endian.h"

namespace ferry::client::pg {

using pipeline::GetBe64;
using pipeline::Lsn;
using pipeline::TimelineId;

namespace {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

int64_t PgNowMicros() { return pipeline::NowUnixMicros() - pipeline::kPgEpochUnixMicros; }

absl::StatusOr<uint64_t> ParseSize(absl::string_view text) {
  // SHOW wal_segment_size answers like "16MB" or "1GB".
  uint64_t n = 0;
  size_t i = 0;
  while (i < text.size() && absl::ascii_isdigit(text[i])) n = n * 10 + (text[i++] - '0');
  absl::string_view unit = text.substr(i);
  if (unit == "kB") return n << 10;
  if (unit == "MB") return n << 20;
  if (unit == "GB") return n << 30;
  if (unit.empty() || unit == "B") return n;
  return absl::FailedPreconditionError(absl::StrCat("unexpected wal_segment_size \"", text, "\""));
}

// BASE_BACKUP with ferry's options (see BaseBackup in the header), in the syntax of the
// server's major: 15 brought the parenthesised list; 14 has bare keywords, and its defaults
// already leave the WAL out.
std::string BaseBackupCommand(const std::string& label, int server_version, bool incremental) {
  // The label is a string literal in the command: escape quotes the SQL way.
  std::string quoted;
  for (char c : label) {
    quoted += c;
    if (c == '\'') quoted += c;
  }
  if (server_version < 150000) {
    return absl::StrCat("BASE_BACKUP LABEL '", quoted, "' PROGRESS FAST NOWAIT MANIFEST 'yes' ",
                        "MANIFEST_CHECKSUMS 'CRC32C'");
  }
  return absl::StrCat("BASE_BACKUP ( LABEL '", quoted, "', PROGRESS, CHECKPOINT 'fast', WAL false, ",
                      "WAIT false, MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C'", incremental ? ", INCREMENTAL" : "",
                      " )");
}

// PostgreSQL 14 answers BASE_BACKUP in the older form: one COPY per tablespace holding bare
// tar bytes without its two end-of-archive blocks, then one COPY holding the manifest. This
// turns that into 15's typed CopyData messages ('n', 'd', 'm'), so that one reader serves both.
class LegacyBackupCopies {
 public:
  explicit LegacyBackupCopies(std::function<absl::Status(absl::string_view)> on_copy_data)
      : on_copy_data_(std::move(on_copy_data)) {}
  void set_tablespaces(int n) { tablespaces_ = n; }

  // At each COPY's start: a new archive while tablespaces remain, then the manifest.
  absl::Status BeginCopy() {
    ++copies_;
    return on_copy_data_(InArchive() ? "n" : "m");
  }
  absl::Status Data(absl::string_view bytes) {
    typed_.assign(1, 'd');
    typed_.append(bytes.data(), bytes.size());
    return on_copy_data_(typed_);
  }
  absl::Status EndCopy() {
    if (!InArchive()) return absl::OkStatus();
    return Data(absl::string_view(kEndOfArchive, sizeof(kEndOfArchive)));
  }

 private:
  bool InArchive() const { return copies_ <= tablespaces_; }
  static constexpr char kEndOfArchive[1024] = {};
  std::function<absl::Status(absl::string_view)> on_copy_data_;
  std::string typed_;
  int tablespaces_ = 0;
  int copies_ = 0;
};

// BASE_BACKUP's start or end point: a one-row result (lsn, timeline).
absl::Status ParseBackupPoint(PGresult* r, Lsn* lsn, TimelineId* tli) {
  uint32_t t = 0;
  if (PQntuples(r) != 1 || PQnfields(r) < 2 || !absl::SimpleAtoi(PQgetvalue(r, 0, 1), &t)) {
    return absl::DataLossError("BASE_BACKUP sent a malformed WAL position result");
  }
  FERRY_ASSIGN_OR_RETURN(*lsn, Lsn::Parse(PQgetvalue(r, 0, 0)));
  *tli = TimelineId(t);
  return absl::OkStatus();
}

// BASE_BACKUP's tablespace list: adds the sizes to points->estimated_bytes;
// kFailedPrecondition for a tablespace outside the data directory.
absl::Status ReadTablespaces(PGresult* r, BackupPoints* points) {
  for (int i = 0; i < PQntuples(r); ++i) {
    if (!PQgetisnull(r, i, 1)) {
      return absl::FailedPreconditionError(
          absl::StrCat("the server has a tablespace at ", PQgetvalue(r, i, 1),
                       "; ferry backs up only clusters without extra tablespaces for now"));
    }
    if (!PQgetisnull(r, i, 2)) {
      // The size column is in kilobytes.
      uint64_t kb = 0;
      if (absl::SimpleAtoi(PQgetvalue(r, i, 2), &kb)) points->estimated_bytes += kb << 10;
    }
  }
  return absl::OkStatus();
}

}  // namespace

struct ReplicationConnection::Impl {
  PGconn* conn = nullptr;
  std::string conninfo;  // the user's, for a plain SQL session beside this one
  char* copy_buf = nullptr;
  ~Impl() {
    if (copy_buf != nullptr) PQfreemem(copy_buf);
    if (conn != nullptr) PQfinish(conn);
  }

  absl::Status Error(absl::string_view what) const {
    const std::string msg = absl::StrCat(what, ": ", OneLine(PQerrorMessage(conn)));
    if (PQstatus(conn) != CONNECTION_OK) return absl::UnavailableError(msg);
    return absl::FailedPreconditionError(msg);
  }

  // PQexec's work (the last result counts), with every wait bounded by `silence_ms`.
  absl::StatusOr<Result> Exec(const std::string& sql, ExecStatusType want, int silence_ms = kServerSilenceMs) {
    if (PQsendQuery(conn, sql.c_str()) != 1) return Error(sql);
    FERRY_ASSIGN_OR_RETURN(PGresult * last, AwaitLastResult(conn, silence_ms, sql));
    Result r(last);
    if (r == nullptr || PQresultStatus(r.get()) != want) {
      return Error(sql);
    }
    return r;
  }

  // Hands BASE_BACKUP's CopyData to on_copy_data until the copy ends, setting *failure to the
  // first error (and cancelling the backup when on_copy_data fails). Reads the copy to its end
  // even after a failure (we cancelled; the server stops soon): libpq hands out the next
  // result only then.
  void ReadBackupCopy(const std::function<absl::Status(absl::string_view)>& on_copy_data, absl::Status* failure) {
    for (;;) {
      char* buf = nullptr;
      const int n = PQgetCopyData(conn, &buf, 0);
      if (n == -1) break;  // end of copy; its result follows
      if (n == -2) {
        if (failure->ok()) *failure = Error("BASE_BACKUP copy");
        break;
      }
      if (failure->ok()) {
        *failure = on_copy_data(absl::string_view(buf, n));
        if (!failure->ok()) PQrequestCancel(conn);
      }
      PQfreemem(buf);
    }
  }

  // Sends `cmd` and returns its first result (e.g. a CopyIn), waiting at most kServerSilenceMs.
  absl::StatusOr<Result> FirstResultOf(const std::string& cmd) {
    if (PQsendQuery(conn, cmd.c_str()) != 1) return Error(cmd);
    return FirstResult(cmd);
  }

  // The first result of a command just sent, waiting at most kServerSilenceMs of silence.
  absl::StatusOr<Result> FirstResult(const std::string& cmd) {
    FERRY_RETURN_IF_ERROR(AwaitResult(conn, kServerSilenceMs, cmd));
    Result r(PQgetResult(conn));
    if (r == nullptr) return Error(cmd);
    return r;
  }
};

ReplicationConnection::ReplicationConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReplicationConnection::~ReplicationConnection() = default;

absl::StatusOr<std::unique_ptr<ReplicationConnection>> ReplicationConnection::Connect(
    const std::string& conninfo, const std::string& application_name, bool logical,
    const std::string& session_options) {
  // Keyword arrays let the user's conninfo (or URI) be expanded while ferry's replication
  // and application_name settings take precedence. What comes before dbname is a default the
  // conninfo may override: a connect_timeout, so that a server (or proxy) that accepts the
  // connection and then says nothing cannot hold a reconnect forever.
  const char* keys[] = {"connect_timeout", "dbname", "replication", "application_name",
                        session_options.empty() ? nullptr : "options", nullptr};
  const char* values[] = {"10", conninfo.c_str(), logical ? "database" : "true", application_name.c_str(),
                          session_options.c_str(), nullptr};
  auto impl = std::make_unique<Impl>();
  impl->conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  impl->conninfo = conninfo;
  if (impl->conn == nullptr || PQstatus(impl->conn) != CONNECTION_OK) {
    return absl::UnavailableError(absl::StrCat("connect to postgres (", conninfo,
                                               "): ", OneLine(PQerrorMessage(impl->conn))));
  }
  std::unique_ptr<ReplicationConnection> c(new ReplicationConnection(std::move(impl)));
  c->server_name_ = absl::StrCat(PQhost(c->impl_->conn), ":", PQport(c->impl_->conn));
  return c;
}

absl::StatusOr<SystemInfo> ReplicationConnection::IdentifySystem() {
  FERRY_ASSIGN_OR_RETURN(Result r, impl_->Exec("IDENTIFY_SYSTEM", PGRES_TUPLES_OK));
  if (PQntuples(r.get()) != 1 || PQnfields(r.get()) < 3) {
    return absl::FailedPreconditionError("IDENTIFY_SYSTEM returned an unexpected shape");
  }
  SystemInfo info;
  uint32_t tli = 0;
  if (!absl::SimpleAtoi(PQgetvalue(r.get(), 0, 0), &info.system_id) ||
      !absl::SimpleAtoi(PQgetvalue(r.get(), 0, 1), &tli)) {
    return absl::FailedPreconditionError("IDENTIFY_SYSTEM returned a bad system id or timeline");
  }
  info.timeline = TimelineId(tli);
  FERRY_ASSIGN_OR_RETURN(info.xlogpos, Lsn::Parse(PQgetvalue(r.get(), 0, 2)));
  FERRY_ASSIGN_OR_RETURN(Result s, impl_->Exec("SHOW wal_segment_size", PGRES_TUPLES_OK));
  FERRY_ASSIGN_OR_RETURN(info.segment_bytes, ParseSize(PQgetvalue(s.get(), 0, 0)));
  info.server_version = ServerVersion();
  return info;
}

absl::Status SilenceWatch::Check(int64_t now_ms) const {
  if (!asked_ || now_ms - asked_ms_ < timeout_ms_ / 2) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(
      "no message from the server for ", (now_ms - last_ms_) / 1000.0, " s, not even an answer to a reply request sent ",
      (now_ms - asked_ms_) / 1000.0, " s ago (timeout: the server's wal_sender_timeout): the connection is dead; reconnecting"));
}

absl::StatusOr<std::string> ReplicationConnection::Show(absl::string_view setting, int silence_ms) {
  FERRY_ASSIGN_OR_RETURN(Result r, impl_->Exec(absl::StrCat("SHOW ", setting), PGRES_TUPLES_OK, silence_ms));
  if (PQntuples(r.get()) != 1 || PQnfields(r.get()) != 1) {
    return absl::FailedPreconditionError(absl::StrCat("SHOW ", setting, " returned no single value"));
  }
  return std::string(PQgetvalue(r.get(), 0, 0));
}

absl::StatusOr<int64_t> ReplicationConnection::SenderTimeoutMillis() {
  FERRY_ASSIGN_OR_RETURN(const std::string shown, Show("wal_sender_timeout"));
  // GUC_UNIT_MS values are shown in the largest unit that divides them: "60s", "1min", "500ms".
  const absl::string_view text = shown;
  int64_t n = 0;
  size_t i = 0;
  while (i < text.size() && absl::ascii_isdigit(text[i])) n = n * 10 + (text[i++] - '0');
  const absl::string_view unit = text.substr(i);
  if (unit.empty() || unit == "ms") return n;
  if (unit == "s") return n * 1000;
  if (unit == "min") return n * 60 * 1000;
  if (unit == "h") return n * 3600 * 1000;
  if (unit == "d") return n * 86400 * 1000;
  return absl::FailedPreconditionError(absl::StrCat("unexpected wal_sender_timeout \"", text, "\""));
}

absl::Status ReplicationConnection::UploadManifest(absl::string_view manifest) {
  if (ServerVersion() < 170000) {
    return absl::FailedPreconditionError(absl::StrCat("incremental base backups need PostgreSQL 17 or later; the server is ",
                                                      ServerVersion() / 10000));
  }
  PGconn* conn = impl_->conn;
  FERRY_ASSIGN_OR_RETURN(Result r, impl_->FirstResultOf("UPLOAD_MANIFEST"));
  if (PQresultStatus(r.get()) != PGRES_COPY_IN) return impl_->Error("UPLOAD_MANIFEST");
  for (size_t at = 0; at < manifest.size(); at += 1 << 20) {
    const absl::string_view piece = manifest.substr(at, 1 << 20);
    if (PQputCopyData(conn, piece.data(), static_cast<int>(piece.size())) != 1) return impl_->Error("UPLOAD_MANIFEST");
  }
  if (PQputCopyEnd(conn, nullptr) != 1) return impl_->Error("UPLOAD_MANIFEST");
  absl::Status failure;
  while (true) {
    FERRY_RETURN_IF_ERROR(AwaitResult(conn, kServerSilenceMs, "UPLOAD_MANIFEST"));
    PGresult* raw = PQgetResult(conn);
    if (raw == nullptr) break;
    Result done(raw);
    if (PQresultStatus(done.get()) != PGRES_COMMAND_OK && failure.ok()) {
      failure = absl::FailedPreconditionError(
          absl::StrCat("UPLOAD_MANIFEST: ", OneLine(PQresultErrorMessage(done.get()))));
    }
  }
  return failure;
}

absl::StatusOr<BackupPoints> ReplicationConnection::BaseBackup(
    const std::string& label, bool incremental, const std::function<absl::Status(const BackupPoints&)>& on_start,
    const std::function<absl::Status(absl::string_view)>& on_copy_data) {
  PGconn* conn = impl_->conn;
  const bool legacy = ServerVersion() < 150000;
  LegacyBackupCopies legacy_copies(on_copy_data);
  const std::string cmd = BaseBackupCommand(label, ServerVersion(), incremental);
  // PQexec would keep only the last result: the command answers with several.
  if (PQsendQuery(conn, cmd.c_str()) != 1) return impl_->Error("BASE_BACKUP");
  BackupPoints points;
  int tuple_sets = 0;
  absl::Status failure;  // the first error; the remaining results are still drained
  while (PGresult* raw = PQgetResult(conn)) {
    Result r(raw);
    const ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_COPY_OUT && legacy) {
      if (failure.ok()) {
        failure = legacy_copies.BeginCopy();
        if (!failure.ok()) PQrequestCancel(conn);
      }
      impl_->ReadBackupCopy([&](absl::string_view bytes) { return legacy_copies.Data(bytes); }, &failure);
      if (failure.ok()) failure = legacy_copies.EndCopy();
      continue;
    }
    if (st == PGRES_COPY_OUT) {
      impl_->ReadBackupCopy(on_copy_data, &failure);
      continue;
    }
    if (!failure.ok()) continue;
    if (st == PGRES_TUPLES_OK) {
      ++tuple_sets;
      if (tuple_sets == 1) {
        failure = ParseBackupPoint(r.get(), &points.start, &points.start_tli);
      } else if (tuple_sets == 2) {
        failure = ReadTablespaces(r.get(), &points);
        legacy_copies.set_tablespaces(PQntuples(r.get()));
        if (failure.ok()) failure = on_start(points);
        if (!failure.ok()) PQrequestCancel(conn);
      } else {
        failure = ParseBackupPoint(r.get(), &points.end, &points.end_tli);
      }
    } else if (st != PGRES_COMMAND_OK) {
      failure = absl::FailedPreconditionError(
          absl::StrCat("BASE_BACKUP: ", OneLine(PQresultErrorMessage(r.get()))));
      if (PQstatus(conn) != CONNECTION_OK) failure = absl::UnavailableError(failure.message());
    }
  }
  FERRY_RETURN_IF_ERROR(failure);
  if (tuple_sets != 3) {
    return absl::DataLossError(
        absl::StrCat("BASE_BACKUP ended after ", tuple_sets, " of 3 result sets"));
  }
  return points;
}

absl::StatusOr<SlotInfo> ReplicationConnection::ReadSlot(const std::string& slot) {
  if (ServerVersion() < 150000) return ReadSlotBySql(slot);  // READ_REPLICATION_SLOT is 15's
  FERRY_ASSIGN_OR_RETURN(Result r,
                         impl_->Exec(absl::StrCat("READ_REPLICATION_SLOT ", slot), PGRES_TUPLES_OK));
  SlotInfo info;
  if (PQntuples(r.get()) != 1 || PQgetisnull(r.get(), 0, 0)) return info;  // no such slot
  info.exists = true;
  if (std::strcmp(PQgetvalue(r.get(), 0, 0), "physical") != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("replication slot \"", slot, "\" is not a physical slot"));
  }
  if (!PQgetisnull(r.get(), 0, 1)) {
    FERRY_ASSIGN_OR_RETURN(info.restart_lsn, Lsn::Parse(PQgetvalue(r.get(), 0, 1)));
    uint32_t tli = 0;
    if (!absl::SimpleAtoi(PQgetvalue(r.get(), 0, 2), &tli)) {
      return absl::FailedPreconditionError("READ_REPLICATION_SLOT returned a bad timeline");
    }
    info.restart_tli = TimelineId(tli);
  }
  return info;
}

// PostgreSQL 14 has neither READ_REPLICATION_SLOT nor SQL on a physical replication
// connection: pg_replication_slots on a session of its own. It has no restart timeline
// either; the server's current one stands in (a slot outlives no promotion: a promoted
// standby has no slots of the old primary).
absl::StatusOr<SlotInfo> ReplicationConnection::ReadSlotBySql(const std::string& slot) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<SqlSession> sql, SqlSession::Connect(impl_->conninfo));
  FERRY_ASSIGN_OR_RETURN(SqlRows rows, sql->Query("SELECT slot_type, restart_lsn::text FROM pg_replication_slots "
                                                  "WHERE slot_name = $1",
                                                  {slot}));
  SlotInfo info;
  if (rows.rows.empty()) return info;
  info.exists = true;
  if (rows.rows[0][0].value_or("") != "physical") {
    return absl::FailedPreconditionError(absl::StrCat("replication slot \"", slot, "\" is not a physical slot"));
  }
  if (rows.rows[0][1].has_value()) {
    FERRY_ASSIGN_OR_RETURN(info.restart_lsn, Lsn::Parse(*rows.rows[0][1]));
    FERRY_ASSIGN_OR_RETURN(SystemInfo sys, IdentifySystem());
    info.restart_tli = sys.timeline;
  }
  return info;
}

absl::Status ReplicationConnection::CreatePhysicalSlot(const std::string& slot) {
  // 15 added the parenthesised options; 14 knows only the bare keyword.
  const char* reserve = ServerVersion() < 150000 ? " PHYSICAL RESERVE_WAL" : " PHYSICAL (RESERVE_WAL)";
  return impl_->Exec(absl::StrCat("CREATE_REPLICATION_SLOT ", slot, reserve), PGRES_TUPLES_OK).status();
}

absl::StatusOr<LogicalSlotCreated> ReplicationConnection::CreateLogicalSlot(const std::string& slot, bool failover) {
  // 14 knows only the bare keyword; FAILOVER is 17's.
  std::string options = ServerVersion() < 150000 ? "EXPORT_SNAPSHOT" : "(SNAPSHOT 'export')";
  if (failover) {
    if (ServerVersion() < 170000) {
      return absl::FailedPreconditionError(absl::StrCat("logical_slot_failover needs PostgreSQL 17 or later; the server is ",
                                                        ServerVersion() / 10000, ": remove the setting"));
    }
    options = "(SNAPSHOT 'export', FAILOVER true)";
  }
  FERRY_ASSIGN_OR_RETURN(
      // Waits for the transactions running at the time to end: no silence limit.
      Result r, impl_->Exec(absl::StrCat("CREATE_REPLICATION_SLOT ", slot, " LOGICAL pgoutput ", options),
                            PGRES_TUPLES_OK, 0));
  if (PQntuples(r.get()) != 1 || PQnfields(r.get()) < 3 || PQgetisnull(r.get(), 0, 2)) {
    return absl::FailedPreconditionError("CREATE_REPLICATION_SLOT returned an unexpected shape");
  }
  LogicalSlotCreated created;
  FERRY_ASSIGN_OR_RETURN(created.consistent_point, Lsn::Parse(PQgetvalue(r.get(), 0, 1)));
  created.snapshot_name = PQgetvalue(r.get(), 0, 2);
  return created;
}

absl::Status ReplicationConnection::DropSlot(const std::string& slot) {
  // WAIT: until the slot's last user lets it go; no silence limit.
  return impl_->Exec(absl::StrCat("DROP_REPLICATION_SLOT ", slot, " WAIT"), PGRES_COMMAND_OK, 0).status();
}

int ReplicationConnection::ServerVersion() const { return PQserverVersion(impl_->conn); }

absl::StatusOr<TimelineHistoryFile> ReplicationConnection::TimelineHistory(TimelineId tli) {
  FERRY_ASSIGN_OR_RETURN(
      Result r, impl_->Exec(absl::StrCat("TIMELINE_HISTORY ", tli.value()), PGRES_TUPLES_OK));
  if (PQntuples(r.get()) != 1 || PQnfields(r.get()) != 2) {
    return absl::FailedPreconditionError("TIMELINE_HISTORY returned an unexpected shape");
  }
  return TimelineHistoryFile{PQgetvalue(r.get(), 0, 0),
                             std::string(PQgetvalue(r.get(), 0, 1), PQgetlength(r.get(), 0, 1))};
}

absl::StatusOr<absl::optional<TimelineEnd>> ReplicationConnection::StartPhysical(
    const std::string& slot, Lsn start, TimelineId tli) {
  const std::string cmd = absl::StrCat("START_REPLICATION SLOT ", slot, " PHYSICAL ",
                                       start.ToString(), " TIMELINE ", tli.value());
  if (PQsendQuery(impl_->conn, cmd.c_str()) != 1) return impl_->Error(cmd);
  FERRY_ASSIGN_OR_RETURN(Result r, impl_->FirstResult(cmd));
  const ExecStatusType st = PQresultStatus(r.get());
  if (st == PGRES_COPY_BOTH) {
    if (PQsetnonblocking(impl_->conn, 1) != 0) return impl_->Error("set non-blocking");
    return absl::optional<TimelineEnd>();
  }
  if (st == PGRES_TUPLES_OK) {
    // The start is exactly the end of a historic timeline: the server answers with the next
    // timeline at once, without COPY.
    TimelineEnd end;
    uint32_t next = 0;
    if (PQntuples(r.get()) != 1 || !absl::SimpleAtoi(PQgetvalue(r.get(), 0, 0), &next)) {
      return absl::FailedPreconditionError("unexpected reply to START_REPLICATION");
    }
    end.next_tli = TimelineId(next);
    FERRY_ASSIGN_OR_RETURN(end.next_start, Lsn::Parse(PQgetvalue(r.get(), 0, 1)));
    if (auto rest = AwaitLastResult(impl_->conn, kServerSilenceMs, cmd); rest.ok()) PQclear(*rest);
    return absl::optional<TimelineEnd>(end);
  }
  return absl::FailedPreconditionError(
      absl::StrCat(cmd, ": ", OneLine(PQresultErrorMessage(r.get()))));
}

absl::Status ReplicationConnection::StartLogical(const std::string& slot, Lsn start, const std::string& options) {
  const std::string cmd =
      absl::StrCat("START_REPLICATION SLOT ", slot, " LOGICAL ", start.ToString(), " (", options, ")");
  if (PQsendQuery(impl_->conn, cmd.c_str()) != 1) return impl_->Error(cmd);
  FERRY_ASSIGN_OR_RETURN(Result r, impl_->FirstResult(cmd));
  if (PQresultStatus(r.get()) != PGRES_COPY_BOTH) {
    const std::string msg = absl::StrCat(cmd, ": ", OneLine(PQresultErrorMessage(r.get())));
    // 55006: the slot is still held by our previous session's walsender (a quick
    // reconnect): gone in a moment, so retry rather than stop.
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    const bool in_use = state != nullptr && std::strcmp(state, "55006") == 0;
    if (auto rest = AwaitLastResult(impl_->conn, kServerSilenceMs, cmd); rest.ok()) PQclear(*rest);
    if (in_use || PQstatus(impl_->conn) != CONNECTION_OK) return absl::UnavailableError(msg);
    return absl::FailedPreconditionError(msg);
  }
  if (PQsetnonblocking(impl_->conn, 1) != 0) return impl_->Error("set non-blocking");
  return absl::OkStatus();
}

absl::StatusOr<CopyMessage> ReplicationConnection::ReadMessage() {
  if (impl_->copy_buf != nullptr) {
    PQfreemem(impl_->copy_buf);
    impl_->copy_buf = nullptr;
  }
  CopyMessage m;
  int n = PQgetCopyData(impl_->conn, &impl_->copy_buf, /*async=*/1);
  if (n == 0) {
    if (PQconsumeInput(impl_->conn) != 1) return impl_->Error("read from postgres");
    n = PQgetCopyData(impl_->conn, &impl_->copy_buf, 1);
    if (n == 0) return m;
  }
  if (n == -1) {
    m.kind = CopyMessage::Kind::kCopyDone;
    return m;
  }
  if (n == -2) return impl_->Error("read from postgres");
  const char* p = impl_->copy_buf;
  const size_t len = static_cast<size_t>(n);
  if (p[0] == 'w') {
    if (len < 25) return absl::DataLossError(absl::StrCat("XLogData message of ", len, " bytes"));
    m.kind = CopyMessage::Kind::kXLogData;
    m.data_start = Lsn(GetBe64(p + 1));
    m.wal_end = Lsn(GetBe64(p + 9));
    m.payload = absl::string_view(p + 25, len - 25);
    return m;
  }
  if (p[0] == 'k') {
    if (len < 18) return absl::DataLossError(absl::StrCat("keepalive message of ", len, " bytes"));
    m.kind = CopyMessage::Kind::kKeepalive;
    m.wal_end = Lsn(GetBe64(p + 1));
    m.reply_requested = p[17] != 0;
    return m;
  }
  return absl::DataLossError(
      absl::StrCat("unknown replication message type 0x", absl::Hex(static_cast<uint8_t>(p[0]))));
}

absl::StatusOr<bool> ReplicationConnection::Wait(int timeout_ms, int extra_fd1, int extra_fd2) {
  pollfd fds[3];
  fds[0] = {PQsocket(impl_->conn), POLLIN, 0};
  if (PQflush(impl_->conn) == 1) fds[0].events |= POLLOUT;
  fds[1] = {extra_fd1, POLLIN, 0};
  fds[2] = {extra_fd2, POLLIN, 0};
  int rc = poll(fds, 3, timeout_ms);
  if (rc < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "poll");
  return rc > 0 && ((fds[1].revents & POLLIN) != 0 || (fds[2].revents & POLLIN) != 0);
}

absl::Status ReplicationConnection::SendStatus(Lsn write, Lsn flush, Lsn apply,
                                               bool reply_requested) {
  char msg[34];
  msg[0] = 'r';
  pipeline::PutBe64(msg + 1, write.value());
  pipeline::PutBe64(msg + 9, flush.value());
  pipeline::PutBe64(msg + 17, apply.value());
  pipeline::PutBe64(msg + 25, static_cast<uint64_t>(PgNowMicros()));
  msg[33] = reply_requested ? 1 : 0;
  if (PQputCopyData(impl_->conn, msg, sizeof(msg)) != 1 || PQflush(impl_->conn) < 0) {
    return impl_->Error("send standby status");
  }
  return absl::OkStatus();
}

absl::StatusOr<TimelineEnd> ReplicationConnection::FinishTimeline() {
  // libpq reports COPY_IN until we close our half of the CopyBoth (docs/protocols.md, "CopyBoth at the end of a timeline"). When the server ended the COPY because it is shutting down, libpq may already
  // have left the COPY state: closing our half then fails, and what the server sent next says
  // the rest.
  const bool closed = PQputCopyEnd(impl_->conn, nullptr) == 1;
  const std::string close_error = closed ? "" : OneLine(PQerrorMessage(impl_->conn));
  PQsetnonblocking(impl_->conn, 0);
  absl::optional<TimelineEnd> end;
  while (true) {
    FERRY_RETURN_IF_ERROR(AwaitResult(impl_->conn, kServerSilenceMs, "the end of the timeline"));
    Result r(PQgetResult(impl_->conn));
    if (r == nullptr) break;
    const ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_TUPLES_OK && PQntuples(r.get()) == 1) {
      TimelineEnd e;
      uint32_t next = 0;
      if (!absl::SimpleAtoi(PQgetvalue(r.get(), 0, 0), &next)) {
        return absl::FailedPreconditionError("bad next timeline from the server");
      }
      e.next_tli = TimelineId(next);
      FERRY_ASSIGN_OR_RETURN(e.next_start, Lsn::Parse(PQgetvalue(r.get(), 0, 1)));
      end = e;
    } else if (st == PGRES_FATAL_ERROR) {
      return absl::UnavailableError(
          absl::StrCat("end of timeline: ", OneLine(PQresultErrorMessage(r.get()))));
    }
  }
  if (!end.has_value()) {
    // A server that stops (shutdown, restart) ends streaming this way: reconnect later.
    return absl::UnavailableError(absl::StrCat("server ended streaming without naming the next timeline",
                                               closed ? "" : absl::StrCat(" (", close_error, ")")));
  }
  return *end;
}

absl::Status ReplicationConnection::EndCopy() {
  if (PQputCopyEnd(impl_->conn, nullptr) != 1) return impl_->Error("end copy");
  PQsetnonblocking(impl_->conn, 0);
  // Drain: the server answers our CopyDone with its own, then the command results.
  char* buf = nullptr;
  while (PQgetCopyData(impl_->conn, &buf, 0) > 0) PQfreemem(buf);
  while (Result r{PQgetResult(impl_->conn)}) {
  }
  return absl::OkStatus();
}

int64_t MonotonicMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string WalFileName(TimelineId tli, uint64_t segno, uint64_t segment_bytes) {
  const uint64_t per_id = 0x100000000ull / segment_bytes;
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%08X%08X%08X", tli.value(),
                static_cast<uint32_t>(segno / per_id), static_cast<uint32_t>(segno % per_id));
  return buf;
}

bool ParseWalFileName(absl::string_view name, uint64_t segment_bytes, TimelineId* tli,
                      uint64_t* segno) {
  if (name.size() != 24) return false;
  for (char c : name) {
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) return false;
  }
  uint32_t t = 0, hi = 0, lo = 0;
  if (!absl::SimpleHexAtoi(name.substr(0, 8), &t) || !absl::SimpleHexAtoi(name.substr(8, 8), &hi) ||
      !absl::SimpleHexAtoi(name.substr(16, 8), &lo)) {
    return false;
  }
  const uint64_t per_id = 0x100000000ull / segment_bytes;
  if (lo >= per_id) return false;
  *tli = TimelineId(t);
  *segno = static_cast<uint64_t>(hi) * per_id + lo;
  return true;
}

absl::StatusOr<std::vector<HistoryEntry>> ParseTimelineHistory(absl::string_view content) {
  std::vector<HistoryEntry> entries;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::ByAnyChar("\t "), absl::SkipEmpty());
    uint32_t tli = 0;
    if (f.size() < 2 || !absl::SimpleAtoi(f[0], &tli)) {
      return absl::DataLossError(absl::StrCat("bad timeline history line \"", line, "\""));
    }
    auto lsn = Lsn::Parse(f[1]);
    if (!lsn.ok()) return absl::DataLossError(absl::StrCat("bad timeline history line \"", line, "\""));
    entries.push_back({TimelineId(tli), *lsn});
  }
  return entries;
}

}  // namespace ferry::client::pg
