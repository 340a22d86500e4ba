// SQL on a normal (not replication) connection: `ferry mark`'s restore point, the logical
// source's publication and snapshot reads, and the standby region's change applier.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"

struct pg_conn;    // libpq's PGconn
struct pg_result;  // libpq's PGresult

namespace ferry::client::pg {

// How long a command may go without a byte from the server before the connection counts as
// dead: what ends a hang on a proxy that stalls (TCP sees nothing wrong) outside streaming,
// where SilenceWatch (replication_conn.h) does that job.
inline constexpr int kServerSilenceMs = 60000;

// After a PQsend*: waits until the next PQgetResult will not block. kUnavailable naming
// `what` when the server sends nothing for `silence_ms` (<= 0: waits for ever) or the
// connection fails.
absl::Status AwaitResult(pg_conn* conn, int silence_ms, absl::string_view what);

// PQexec's result loop after a PQsend*, each wait bounded as AwaitResult's: the last result
// (the caller PQclears it; null when there was none), or the first COPY one, as PQexec stops
// there too.
absl::StatusOr<struct pg_result*> AwaitLastResult(pg_conn* conn, int silence_ms, absl::string_view what);

// A libpq message (several lines, a trailing newline) as one line, for logs and errors.
std::string OneLine(const char* msg);

// Session settings under which values travel in their text form the same way whoever runs the
// server (ISO dates, UTC, floats that round-trip, hex bytea): the logical source reads and the
// standby applier writes with them.
inline constexpr char kCanonicalTextOptions[] =
    "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex";

// Connects with `conninfo`, runs `sql` with text parameters $1.., returns the first row's
// columns (empty when no row) and disconnects. kUnavailable when the server cannot be
// reached, kFailedPrecondition with the server's message when the statement fails.
absl::StatusOr<std::vector<std::string>> QueryFirstRow(const std::string& conninfo, const std::string& sql,
                                                       const std::vector<std::string>& params = {});

// A result: rows of text values, absl::nullopt for NULL.
using SqlRow = std::vector<absl::optional<std::string>>;
struct SqlRows {
  std::vector<std::string> columns;
  std::vector<SqlRow> rows;
};

// One connection for a sequence of statements. Not thread-safe. Errors as QueryFirstRow's:
// kUnavailable once the connection is lost, kFailedPrecondition for a failed statement
// (the message is the server's, prefixed with `what` when given).
class SqlSession {
 public:
  // `session_options`: libpq's "options" (e.g. "-c TimeZone=UTC"), replacing the conninfo's.
  static absl::StatusOr<std::unique_ptr<SqlSession>> Connect(const std::string& conninfo,
                                                             const std::string& session_options = "");
  ~SqlSession();

  // Runs one statement with text parameters (absl::nullopt binds NULL; the server infers each
  // parameter's type from where it is used).
  absl::StatusOr<SqlRows> Query(const std::string& sql, const SqlRow& params = {});
  // From now on a statement the server answers nothing for this long fails kUnavailable
  // (AwaitResult); 0, the default, waits for ever.
  void set_silence_ms(int ms) { silence_ms_ = ms; }
  absl::Status Exec(const std::string& sql, const SqlRow& params = {}) { return Query(sql, params).status(); }
  // Rows the last INSERT/UPDATE/DELETE touched.
  int64_t affected() const { return affected_; }

  // "name" quoted as an SQL identifier (doubling any quote inside).
  static std::string Ident(const std::string& name);
  // "schema"."name".
  static std::string Ident(const std::string& schema, const std::string& name);
  // "schema.name" quoted part by part; a bare "name" is qualified with default_schema when
  // one is given.
  static std::string DottedIdent(const std::string& dotted, const std::string& default_schema = "");

 private:
  struct Impl;
  explicit SqlSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int64_t affected_ = 0;
  int silence_ms_ = 0;
};

}  // namespace ferry::client::pg
