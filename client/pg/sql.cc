#include "client/pg/sql.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cerrno>
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "pipeline/check.h"

namespace ferry::client::pg {

namespace {

std::string LastError(PGconn* conn) { return OneLine(PQerrorMessage(conn)); }

}  // namespace

std::string OneLine(const char* msg) {
  std::string s = msg == nullptr ? "" : msg;
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return std::string(absl::StripTrailingAsciiWhitespace(s));
}

absl::StatusOr<PGresult*> AwaitLastResult(PGconn* conn, int silence_ms, absl::string_view what) {
  PGresult* last = nullptr;
  while (true) {
    absl::Status waited = AwaitResult(conn, silence_ms, what);
    if (!waited.ok()) {
      PQclear(last);
      return waited;
    }
    PGresult* next = PQgetResult(conn);
    if (next == nullptr) return last;
    PQclear(last);
    last = next;
    const ExecStatusType st = PQresultStatus(last);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) return last;
  }
}

absl::Status AwaitResult(PGconn* conn, int silence_ms, absl::string_view what) {
  using Clock = std::chrono::steady_clock;
  auto heard = Clock::now();
  while (PQisBusy(conn)) {
    int wait = -1;
    if (silence_ms > 0) {
      const auto quiet = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - heard).count();
      if (quiet >= silence_ms) {
        return absl::UnavailableError(absl::StrCat("no answer from the server for ", quiet / 1000.0, " s to ", what,
                                                   ": the connection is dead; reconnecting"));
      }
      wait = static_cast<int>(silence_ms - quiet);
    }
    pollfd p{PQsocket(conn), POLLIN, 0};
    const int rc = poll(&p, 1, wait);
    if (rc < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "poll");
    if (rc <= 0) continue;
    if (PQconsumeInput(conn) == 0) return absl::UnavailableError(absl::StrCat(what, ": ", LastError(conn)));
    heard = Clock::now();
  }
  return absl::OkStatus();
}

struct SqlSession::Impl {
  PGconn* conn = nullptr;
  ~Impl() {
    if (conn != nullptr) PQfinish(conn);
  }
};

SqlSession::SqlSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqlSession::~SqlSession() = default;

absl::StatusOr<std::unique_ptr<SqlSession>> SqlSession::Connect(const std::string& conninfo,
                                                               const std::string& session_options) {
  auto impl = std::make_unique<Impl>();
  // connect_timeout before dbname: a default the conninfo may override (replication_conn.cc).
  const char* keys[] = {"connect_timeout", "dbname", session_options.empty() ? nullptr : "options", nullptr};
  const char* values[] = {"10", conninfo.c_str(), session_options.c_str(), nullptr};
  impl->conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (impl->conn == nullptr || PQstatus(impl->conn) != CONNECTION_OK) {
    return absl::UnavailableError(absl::StrCat("connect to PostgreSQL (", conninfo, "): ", LastError(impl->conn)));
  }
  return std::unique_ptr<SqlSession>(new SqlSession(std::move(impl)));
}

absl::StatusOr<SqlRows> SqlSession::Query(const std::string& sql, const SqlRow& params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.has_value() ? p->c_str() : nullptr);
  // PQexecParams's work, with every wait bounded by silence_ms_.
  PGresult* res = nullptr;
  if (PQsendQueryParams(impl_->conn, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                        nullptr, 0) == 1) {
    FERRY_ASSIGN_OR_RETURN(res, AwaitLastResult(impl_->conn, silence_ms_, sql.substr(0, 120)));
  }
  const ExecStatusType st = PQresultStatus(res);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    const std::string msg = absl::StrCat(LastError(impl_->conn), " (in: ", sql.substr(0, 120), ")");
    PQclear(res);
    if (PQstatus(impl_->conn) != CONNECTION_OK) return absl::UnavailableError(msg);
    return absl::FailedPreconditionError(msg);
  }
  SqlRows out;
  const int ncols = PQnfields(res);
  for (int c = 0; c < ncols; ++c) out.columns.emplace_back(PQfname(res, c));
  const int nrows = PQntuples(res);
  out.rows.reserve(nrows);
  for (int r = 0; r < nrows; ++r) {
    SqlRow row(ncols);
    for (int c = 0; c < ncols; ++c) {
      if (!PQgetisnull(res, r, c)) row[c] = std::string(PQgetvalue(res, r, c), PQgetlength(res, r, c));
    }
    out.rows.push_back(std::move(row));
  }
  affected_ = 0;
  (void)absl::SimpleAtoi(PQcmdTuples(res), &affected_);
  PQclear(res);
  return out;
}

std::string SqlSession::Ident(const std::string& name) {
  std::string out = "\"";
  for (char c : name) {
    out += c;
    if (c == '"') out += c;
  }
  return out + "\"";
}

std::string SqlSession::Ident(const std::string& schema, const std::string& name) {
  return absl::StrCat(Ident(schema), ".", Ident(name));
}

std::string SqlSession::DottedIdent(const std::string& dotted, const std::string& default_schema) {
  const size_t dot = dotted.find('.');
  if (dot != std::string::npos) return Ident(dotted.substr(0, dot), dotted.substr(dot + 1));
  return default_schema.empty() ? Ident(dotted) : Ident(default_schema, dotted);
}

absl::StatusOr<std::vector<std::string>> QueryFirstRow(const std::string& conninfo, const std::string& sql,
                                                       const std::vector<std::string>& params) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<SqlSession> session, SqlSession::Connect(conninfo));
  SqlRow bound(params.begin(), params.end());
  FERRY_ASSIGN_OR_RETURN(SqlRows rows, session->Query(sql, bound));
  std::vector<std::string> first;
  if (!rows.rows.empty()) {
    for (const auto& v : rows.rows[0]) first.push_back(v.value_or(""));
  }
  return first;
}

}  // namespace ferry::client::pg
