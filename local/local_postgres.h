// LocalPostgres: a real PostgreSQL server (14 to 18) in a directory of its own on 127.0.0.1 and a free
// port, run as the unprivileged `postgres` OS user when we are root (PostgreSQL refuses to run
// as root), stopped by pid. Used by `ferry sandbox` and by the integration tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "local/process.h"
#include "local/server_user.h"

namespace ferry::local {

struct LocalPostgresOptions {
  // Parent of the data dir: holds data/, postgres.log and (when its path is short enough)
  // the Unix socket. A new temp dir, removed with the server, when empty.
  std::string base_dir;
  // Extra postgresql.conf lines, after ferry's defaults so they win,
  // e.g. "synchronous_standby_names = 'ferry_main'".
  std::vector<std::string> settings;
  // The server's major: 15 runs Debian's postgresql-15, 14 and 16 to 18 the builds
  // scripts/fetch-postgres.sh caches. Client tools (psql, pgbench, ...) are 15's either way.
  int major = 15;
  // The server binaries to run (`--pg-bin`); empty: PgServerBinDir(major) finds them.
  std::string pg_bin;
};

// One running postmaster. Not thread-safe. The destructor stops the server (fast shutdown,
// SIGKILL if that fails) and removes the temp dirs it created, unless the environment has
// FERRY_KEEP_TEST_DIRS=1; a data dir given to StartExisting is never removed.
//
// Every start picks a new free port and passes port, socket dir and listen address on the
// postmaster's command line, so a copied data dir never fights its origin for either.
class LocalPostgres {
 public:
  // initdb (user postgres, trust auth, 16 MB WAL segments, UTF8, C locale) then start.
  // postgresql.conf gets listen_addresses = '127.0.0.1', the port, the socket dir,
  // wal_level = logical, max_wal_senders = 10, max_replication_slots = 10, fsync = on, then
  // `settings`; pg_hba.conf trusts local and 127.0.0.1 for every user, database and
  // replication. Fails with kFailedPrecondition (never a skip) when the major's server is not
  // installed, naming what installs it, and when a server does not come up, quoting its log.
  static absl::StatusOr<std::unique_ptr<LocalPostgres>> Create(const LocalPostgresOptions& options);

  // Starts an existing data directory (e.g. one restored from a base backup with recovery
  // settings) on a new free port; its log goes to `<data_dir>.log`. When root, makes the
  // directory 0700 and hands it to the postgres user first. It runs the server binaries of
  // the directory's PG_VERSION (PgServerBinDir). A postmaster.pid left by a
  // killed server is removed; one naming a live postgres process is kFailedPrecondition.
  // Returns once the server accepts connections (for archive recovery: once consistent).
  // With port > 0 the server listens there (no retry on another port when it is taken).
  // pg_bin names the server binaries (see PgServerBinDir).
  static absl::StatusOr<std::unique_ptr<LocalPostgres>> StartExisting(const std::string& data_dir, int port = 0,
                                                                      const std::string& pg_bin = "");

  // Takes charge of a server already running in `data_dir` on 127.0.0.1:`port` (as
  // `ferry restore --start` leaves one): Query and RunTool reach it, and it is stopped like
  // any other when this object goes.
  static absl::StatusOr<std::unique_ptr<LocalPostgres>> Adopt(const std::string& data_dir, int port);

  // Leaves the server running (and its socket dir in place) when this object goes away:
  // for `ferry restore --start`, whose server outlives ferry.
  void Detach() {
    running_ = false;
    owned_dirs_.clear();
  }

  ~LocalPostgres();
  LocalPostgres(const LocalPostgres&) = delete;
  LocalPostgres& operator=(const LocalPostgres&) = delete;

  int port() const { return port_; }
  int major() const { return major_; }  // PostgreSQL major of the data directory
  const std::string& data_dir() const { return data_dir_; }
  const std::string& socket_dir() const { return socket_dir_; }
  const std::string& log_path() const { return log_path_; }

  // "host=127.0.0.1 port=N user=postgres dbname=DBNAME" for libpq.
  std::string Conninfo(absl::string_view dbname = "postgres") const;

  // Runs `sql` with psql -X -A -t -q -v ON_ERROR_STOP=1 and returns its stdout, trimmed:
  // one line per row, columns separated by '|'. Errors carry psql's message on one line:
  // kUnavailable when psql could not connect (or lost the connection), kInvalidArgument
  // when the server rejected the statement.
  absl::StatusOr<std::string> Query(absl::string_view sql, absl::string_view dbname = "postgres") const;

  // Runs a PostgreSQL 15 program (argv[0] is a name in its bin dir: pgbench, pg_basebackup,
  // pg_waldump, ...) as the postgres user, with PGHOST, PGPORT and PGUSER pointing at this
  // server. A non-zero exit is returned in the result, not as an error.
  absl::StatusOr<CommandResult> RunTool(const std::vector<std::string>& argv) const;

  // pg_ctl stop -m fast, waiting up to 60 s. OK when the server is already down.
  absl::Status Stop();

  // Like a crash: SIGKILL the postmaster and its children and wait until all of them are
  // gone and the port refuses connections. postmaster.pid is left behind, stale, as after a
  // real crash; StartExisting(data_dir()) then runs crash recovery.
  absl::Status Kill();

  // Polls pg_isready until the server accepts connections. kDeadlineExceeded after
  // `timeout_seconds`, kFailedPrecondition at once if the postmaster exits; both quote the log.
  absl::Status WaitReady(int timeout_seconds);

 private:
  LocalPostgres() = default;
  // An object for the data directory (path, log path, major, server binaries), not started.
  static absl::StatusOr<std::unique_ptr<LocalPostgres>> ForDataDir(const std::string& data_dir,
                                                                    const std::string& pg_bin = "");
  absl::Status Start();
  absl::Status StartOnce();
  absl::StatusOr<int> PostmasterPid() const;
  std::string LogTail() const;

  std::string data_dir_;
  std::string socket_dir_;
  std::string log_path_;
  std::vector<std::string> owned_dirs_;  // temp dirs we made; removed by the destructor
  std::string server_bin_;  // initdb, pg_ctl and postgres of the data directory's major
  int major_ = 15;
  bool running_ = false;
  bool fixed_port_ = false;
  int port_ = 0;
};

// The PostgreSQL 15 bin dir, /usr/lib/postgresql/15/bin; kFailedPrecondition naming the
// Debian package postgresql-15 when its `postgres` is not there. Its client tools serve
// every major's server.
absl::StatusOr<std::string> PgBinDir();

// The server binaries (initdb, pg_ctl, postgres) of `major`. pg_bin, when set, is the
// user's choice (`--pg-bin`, `pg_bin` in the config): used if its postgres is that major,
// else kFailedPrecondition naming both. Unset: Debian's /usr/lib/postgresql/<major>/bin, then
// ${FERRY_PG_CACHE:-/var/cache/ferry/postgresql}/<major>/bin (scripts/fetch-postgres.sh);
// kFailedPrecondition naming scripts/install-deps.sh and --pg-bin when neither has it.
absl::StatusOr<std::string> PgServerBinDir(int major, const std::string& pg_bin = "");
// The major of a data directory (its PG_VERSION).
absl::StatusOr<int> DataDirMajor(const std::string& data_dir);
// The major of the `postgres` in bin (its --version).
absl::StatusOr<int> ServerBinMajor(const std::string& bin);

// A new directory /tmp/<prefix>-XXXXXX (under $TMPDIR when set) with mode 0755, so that the
// postgres user can reach what we put in it (archives, the ferry binary's inputs).
absl::StatusOr<std::string> MakeTempDir(absl::string_view prefix);

}  // namespace ferry::local
