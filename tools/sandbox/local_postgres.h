// LocalPostgres: a real PostgreSQL 15 server in a directory of its own on 127.0.0.1 and a free
// port, run as the unprivileged `postgres` user when we are root, stopped by pid. Used by
// `ferry sandbox` and by the integration tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/sandbox/process.h"

namespace ferry::tools {

struct LocalPostgresOptions {
  std::string base_dir;               // holds data/ and the log; a new temp dir when empty
  std::vector<std::string> settings;  // extra postgresql.conf lines
};

// Not thread-safe. The destructor stops the server (fast, then SIGKILL) and removes a temp
// dir it created, unless FERRY_KEEP_TEST_DIRS=1.
class LocalPostgres {
 public:
  // initdb + start. Fails (never skips) when PostgreSQL 15 is not installed, naming the package.
  static absl::StatusOr<std::unique_ptr<LocalPostgres>> Create(const LocalPostgresOptions& options);
  // Starts an existing data directory (e.g. a restored backup) on a new free port.
  static absl::StatusOr<std::unique_ptr<LocalPostgres>> StartExisting(const std::string& data_dir);
  ~LocalPostgres();

  int port() const { return port_; }
  const std::string& data_dir() const { return data_dir_; }
  std::string Conninfo(absl::string_view dbname = "postgres") const;

  // psql -At; returns trimmed stdout, or the error psql printed.
  absl::StatusOr<std::string> Query(absl::string_view sql) const;
  // Runs a PostgreSQL 15 program (argv[0] is a name in its bin dir) as the server's user.
  absl::StatusOr<CommandResult> RunTool(std::vector<std::string> argv) const;

  absl::Status Stop();  // pg_ctl stop -m fast
  absl::Status Kill();  // SIGKILL the postmaster and its children, like a crash

 private:
  LocalPostgres() = default;
  absl::Status Start();

  std::string base_dir_;
  std::string data_dir_;
  std::string log_path_;
  bool owns_base_dir_ = false;
  bool running_ = false;
  int port_ = 0;
};

std::string PgBinDir();

// PostgreSQL refuses to run as root: when we are root, chown `path` (recursively) to the
// postgres user so the server and its tools can write there. No-op otherwise.
absl::Status GiveToServerUser(const std::string& path);

}  // namespace ferry::tools
