#include "ingest/pg/sql.h"

#include <libpq-fe.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "pipeline/check.h"

namespace ferry::ingest::pg {

namespace {

std::string LastError(PGconn* conn) { return std::string(absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn))); }

}  // namespace

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
  PGresult* res = PQexecParams(impl_->conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0);
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

}  // namespace ferry::ingest::pg
