#include "ingest/pg/sql.h"

#include <libpq-fe.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ferry::ingest::pg {

absl::StatusOr<std::vector<std::string>> QueryFirstRow(const std::string& conninfo, const std::string& sql,
                                                       const std::vector<std::string>& params) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string err(absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn)));
    PQfinish(conn);
    return absl::UnavailableError(absl::StrCat("connect to PostgreSQL (", conninfo, "): ", err));
  }
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  PGresult* res = PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                               nullptr, 0);
  absl::StatusOr<std::vector<std::string>> out;
  if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
    out = absl::FailedPreconditionError(std::string(absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn))));
  } else {
    std::vector<std::string> row;
    if (PQntuples(res) > 0) {
      for (int i = 0; i < PQnfields(res); ++i) row.emplace_back(PQgetvalue(res, 0, i));
    }
    out = std::move(row);
  }
  PQclear(res);
  PQfinish(conn);
  return out;
}

}  // namespace ferry::ingest::pg
