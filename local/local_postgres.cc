// LocalPostgres: initdb, pg_ctl and psql driven as subprocesses, as the postgres user when root.
#include "local/local_postgres.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/pg/server_version.h"
#include "pipeline/check.h"

namespace ferry::local {
namespace {

namespace fs = std::filesystem;

constexpr char kPgBinDir[] = "/usr/lib/postgresql/15/bin";
constexpr char kPgCacheDir[] = "/var/cache/ferry/postgresql";  // scripts/fetch-postgres.sh
constexpr int kStartTimeoutSeconds = 60;
constexpr int kStopTimeoutSeconds = 60;
// sun_path holds 108 bytes with the NUL; PostgreSQL appends "/.s.PGSQL.NNNNN" (15).
constexpr size_t kMaxSocketDirLength = 107 - 15;

// Multi-line tool output as one line, for error messages.
std::string OneLine(absl::string_view text, size_t max_chars = 1200) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty()) lines.emplace_back(line);
  }
  std::string s = absl::StrJoin(lines, " | ");
  if (s.size() > max_chars) s = "..." + s.substr(s.size() - max_chars);
  return s;
}


// True when `pid` exists and is not a zombie. A killed postmaster is not our child (pg_ctl
// daemonized it), so its zombie lingers until init reaps it — it is gone for our purposes.
bool ProcessAlive(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  if (!std::getline(in, stat)) return false;
  size_t paren = stat.rfind(')');  // the command name may itself hold spaces and ')'
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

// The processes whose parent is `pid` (from /proc/*/stat).
std::vector<int> ChildrenOf(int pid) {
  std::vector<int> children;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return children;
  while (dirent* e = readdir(dir)) {
    int child = 0;
    if (!absl::SimpleAtoi(e->d_name, &child)) continue;
    std::ifstream in(absl::StrCat("/proc/", child, "/stat"));
    std::string stat;
    if (!std::getline(in, stat)) continue;
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(stat.substr(paren + 2), ' ');
    int ppid = 0;
    if (fields.size() > 1 && absl::SimpleAtoi(fields[1], &ppid) && ppid == pid) children.push_back(child);
  }
  closedir(dir);
  return children;
}

RunOptions AsServerUser(int timeout_seconds) {
  RunOptions o;
  o.as_user = kServerUser;
  o.timeout_seconds = timeout_seconds;
  return o;
}

absl::Status AppendToFile(const std::string& path, const std::string& text, bool truncate = false) {
  std::ofstream out(path, truncate ? std::ios::trunc : std::ios::app);
  out << text;
  out.close();
  if (!out) return absl::ErrnoToStatus(errno, absl::StrCat("write ", path));
  return absl::OkStatus();
}

std::string QuoteConninfoValue(absl::string_view value) {
  if (!value.empty() && value.find_first_of(" '\\") == absl::string_view::npos) return std::string(value);
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

}  // namespace

absl::StatusOr<int> ServerBinMajor(const std::string& bin) {
  const std::string postgres = bin + "/postgres";
  if (access(postgres.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("no PostgreSQL server in ", bin, " (", postgres, ": ",
                                                      std::strerror(errno), ")"));
  }
  // "postgres (PostgreSQL) 18.4" (a distribution may add its own words after the number).
  FERRY_ASSIGN_OR_RETURN(CommandResult r, RunCommand({postgres, "--version"}));
  const size_t at = r.out.find(") ");
  int major = 0;
  if (r.exit_code != 0 || at == std::string::npos ||
      !absl::SimpleAtoi(r.out.substr(at + 2, r.out.find_first_not_of("0123456789", at + 2) - at - 2), &major)) {
    return absl::FailedPreconditionError(
        absl::StrCat(postgres, " --version said \"", OneLine(r.out + r.err), "\", not a PostgreSQL version"));
  }
  return major;
}

absl::StatusOr<int> DataDirMajor(const std::string& data_dir) {
  std::ifstream version_file(data_dir + "/PG_VERSION");
  std::string version;
  std::getline(version_file, version);
  int major = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(version), &major)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostgreSQL in ", data_dir, ": not a PostgreSQL data directory (PG_VERSION ",
        version.empty() ? "missing" : absl::StrCat("is \"", version, "\""), ")"));
  }
  return major;
}

absl::StatusOr<std::string> PgServerBinDir(int major, const std::string& pg_bin) {
  if (!pg_bin.empty()) {
    FERRY_ASSIGN_OR_RETURN(const int found, ServerBinMajor(pg_bin));
    if (found != major) {
      return absl::FailedPreconditionError(absl::StrCat("--pg-bin ", pg_bin, " holds the server of PostgreSQL ", found,
                                                        ", but this needs PostgreSQL ", major,
                                                        ": name the bin directory of ", major));
    }
    return pg_bin;
  }
  FERRY_RETURN_IF_ERROR(client::pg::SupportedMajor(major * 10000).status());
  // Debian's packages first (postgresql-N, e.g. from apt.postgresql.org), then the install
  // step's cache.
  const std::string debian = absl::StrCat("/usr/lib/postgresql/", major, "/bin");
  if (access((debian + "/postgres").c_str(), X_OK) == 0) return debian;
  const char* cache = std::getenv("FERRY_PG_CACHE");
  const std::string bin =
      absl::StrCat(cache != nullptr && *cache != '\0' ? cache : kPgCacheDir, "/", major, "/bin");
  if (access((bin + "/postgres").c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostgreSQL ", major, " is not installed (neither ", debian, " nor ", bin,
        " has a postgres): run scripts/install-deps.sh, which fetches it, or name its bin directory with --pg-bin"));
  }
  return bin;
}

absl::StatusOr<std::string> PgBinDir() {
  const std::string postgres = absl::StrCat(kPgBinDir, "/postgres");
  if (access(postgres.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostgreSQL 15 is not installed (", postgres, ": ", std::strerror(errno),
        "): install the Debian package postgresql-15 (scripts/install-deps.sh)"));
  }
  return std::string(kPgBinDir);
}


absl::StatusOr<std::string> MakeTempDir(absl::string_view prefix) {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string tmpl = absl::StrCat(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp", "/", prefix, "-XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("create temp dir ", tmpl));
  // mkdtemp makes 0700; the postgres user must be able to pass through.
  if (chmod(tmpl.c_str(), 0755) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("chmod 0755 ", tmpl));
  return tmpl;
}

absl::StatusOr<std::unique_ptr<LocalPostgres>> LocalPostgres::Create(const LocalPostgresOptions& options) {
  FERRY_ASSIGN_OR_RETURN(const std::string bin, PgServerBinDir(options.major, options.pg_bin));
  std::unique_ptr<LocalPostgres> pg(new LocalPostgres());
  pg->server_bin_ = bin;
  pg->major_ = options.major;
  std::string base = options.base_dir;
  if (base.empty()) {
    FERRY_ASSIGN_OR_RETURN(base, MakeTempDir("ferry-pg"));
    pg->owned_dirs_.push_back(base);
  } else {
    base = fs::absolute(base).lexically_normal().string();
    if (base.size() > 1 && base.back() == '/') base.pop_back();
    std::error_code ec;
    fs::create_directories(base, ec);
    if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("create ", base));
    if (chmod(base.c_str(), 0755) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("chmod 0755 ", base));
  }
  FERRY_RETURN_IF_ERROR(CheckReachableByServerUser(base + "/data"));
  pg->data_dir_ = base + "/data";
  pg->log_path_ = base + "/postgres.log";
  if (base.size() <= kMaxSocketDirLength) {
    pg->socket_dir_ = base;
  } else {
    FERRY_ASSIGN_OR_RETURN(pg->socket_dir_, MakeTempDir("ferry-pgsock"));
    pg->owned_dirs_.push_back(pg->socket_dir_);
  }
  FERRY_RETURN_IF_ERROR(GiveToServerUser(base));
  FERRY_RETURN_IF_ERROR(GiveToServerUser(pg->socket_dir_));
  FERRY_ASSIGN_OR_RETURN(pg->port_, FindFreeLoopbackPort());

  // --no-sync: a fresh cluster we can re-create; the server itself runs with fsync = on.
  FERRY_ASSIGN_OR_RETURN(
      CommandResult init,
      RunCommand({bin + "/initdb", "-D", pg->data_dir_, "-U", kServerUser, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--wal-segsize=16", "--no-sync", "--no-instructions"},
                 AsServerUser(120)));
  if (init.exit_code != 0) {
    return absl::FailedPreconditionError(absl::StrCat("initdb ", pg->data_dir_, ": exit ", init.exit_code, ": ",
                                                      OneLine(init.err.empty() ? init.out : init.err)));
  }
  std::string conf = absl::StrCat(
      "\n# ferry: a local server for the tests and the sandbox (local/local_postgres.cc)\n",
      "listen_addresses = '127.0.0.1'\n", "port = ", pg->port_, "\n", "unix_socket_directories = '",
      pg->socket_dir_, "'\n", "wal_level = logical\n", "max_wal_senders = 10\n", "max_replication_slots = 10\n",
      "fsync = on\n");
  for (const std::string& line : options.settings) absl::StrAppend(&conf, line, "\n");
  FERRY_RETURN_IF_ERROR(AppendToFile(pg->data_dir_ + "/postgresql.conf", conf));
  FERRY_RETURN_IF_ERROR(AppendToFile(pg->data_dir_ + "/pg_hba.conf",
                                     "# ferry: trust everyone local; the server listens on 127.0.0.1 only\n"
                                     "local all all trust\n"
                                     "host all all 127.0.0.1/32 trust\n"
                                     "local replication all trust\n"
                                     "host replication all 127.0.0.1/32 trust\n",
                                     /*truncate=*/true));
  FERRY_RETURN_IF_ERROR(pg->Start());
  return pg;
}

absl::StatusOr<std::unique_ptr<LocalPostgres>> LocalPostgres::ForDataDir(const std::string& data_dir,
                                                                         const std::string& pg_bin) {
  std::unique_ptr<LocalPostgres> pg(new LocalPostgres());
  std::string dir = fs::absolute(data_dir).lexically_normal().string();
  if (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  pg->data_dir_ = dir;
  pg->log_path_ = dir + ".log";
  FERRY_ASSIGN_OR_RETURN(pg->major_, DataDirMajor(dir));
  FERRY_ASSIGN_OR_RETURN(pg->server_bin_, PgServerBinDir(pg->major_, pg_bin));
  return pg;
}

absl::StatusOr<std::unique_ptr<LocalPostgres>> LocalPostgres::Adopt(const std::string& data_dir, int port) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, ForDataDir(data_dir));
  pg->port_ = port;
  pg->running_ = true;
  return pg;
}

absl::StatusOr<std::unique_ptr<LocalPostgres>> LocalPostgres::StartExisting(const std::string& data_dir, int port,
                                                                            const std::string& pg_bin) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, ForDataDir(data_dir, pg_bin));
  const std::string& dir = pg->data_dir_;
  // A postmaster.pid naming a dead process (or one reused by something else) is what a
  // crash leaves; PostgreSQL itself would refuse to start if the pid is alive at all.
  if (absl::StatusOr<int> pid = pg->PostmasterPid(); pid.ok()) {
    std::ifstream comm_file(absl::StrCat("/proc/", *pid, "/comm"));
    std::string comm;
    std::getline(comm_file, comm);
    if (ProcessAlive(*pid) && comm == "postgres") {
      return absl::FailedPreconditionError(absl::StrCat("start PostgreSQL in ", dir,
                                                        ": already in use by the running postmaster pid ", *pid));
    }
    std::error_code ec;
    fs::remove(dir + "/postmaster.pid", ec);
  }
  FERRY_RETURN_IF_ERROR(CheckReachableByServerUser(dir));
  if (chmod(dir.c_str(), 0700) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("chmod 0700 ", dir));
  FERRY_RETURN_IF_ERROR(GiveToServerUser(dir));
  // pg_ctl opens the log as the postgres user, who may not be able to create it here.
  FERRY_RETURN_IF_ERROR(AppendToFile(pg->log_path_, ""));
  FERRY_RETURN_IF_ERROR(GiveToServerUser(pg->log_path_));
  FERRY_ASSIGN_OR_RETURN(pg->socket_dir_, MakeTempDir("ferry-pgsock"));
  pg->owned_dirs_.push_back(pg->socket_dir_);
  FERRY_RETURN_IF_ERROR(GiveToServerUser(pg->socket_dir_));
  if (port > 0) {
    pg->port_ = port;
    pg->fixed_port_ = true;
  } else {
    FERRY_ASSIGN_OR_RETURN(pg->port_, FindFreeLoopbackPort());
  }
  FERRY_RETURN_IF_ERROR(pg->Start());
  return pg;
}

absl::Status LocalPostgres::Start() {
  // The free port may be taken between FindFreeLoopbackPort and the postmaster's bind
  // (another test starting a server): then try another one.
  for (int attempt = 1;; ++attempt) {
    absl::Status st = StartOnce();
    if (st.ok() || attempt == 3 || fixed_port_ || !absl::StrContains(st.message(), "Address already in use")) return st;
    FERRY_ASSIGN_OR_RETURN(port_, FindFreeLoopbackPort());
  }
}

absl::Status LocalPostgres::StartOnce() {
  const std::string& bin = server_bin_;
  // pg_ctl hands -o to /bin/sh: quote. Command-line settings beat a copied postgresql.conf.
  const std::string server_options =
      absl::StrCat("-p ", port_, " -k ", ShellQuote(socket_dir_), " -c listen_addresses=127.0.0.1");
  FERRY_ASSIGN_OR_RETURN(
      CommandResult r,
      RunCommand({bin + "/pg_ctl", "-D", data_dir_, "-l", log_path_, "-o", server_options, "-w", "-t",
                  std::to_string(kStartTimeoutSeconds), "start"},
                 AsServerUser(kStartTimeoutSeconds + 30)));
  if (r.exit_code != 0) {
    // pg_ctl gives up waiting but leaves a slow server running: don't leak it.
    if (absl::StatusOr<int> pid = PostmasterPid(); pid.ok() && ProcessAlive(*pid)) {
      running_ = true;
      (void)Kill();
    }
    return absl::FailedPreconditionError(absl::StrCat("start PostgreSQL ", major_, " in ", data_dir_, " on 127.0.0.1:", port_,
                                                      ": pg_ctl exit ", r.exit_code, ": ", OneLine(r.err),
                                                      "; server log ", log_path_, ": ", LogTail()));
  }
  running_ = true;
  return WaitReady(kStartTimeoutSeconds);
}

LocalPostgres::~LocalPostgres() {
  if (running_) {
    absl::Status st = Stop();
    if (!st.ok()) {
      std::fprintf(stderr, "ferry: %s; killing it\n", std::string(st.message()).c_str());
      (void)Kill();
    }
  }
  const char* keep = std::getenv("FERRY_KEEP_TEST_DIRS");
  const bool keep_dirs = keep != nullptr && std::string(keep) == "1";
  for (const std::string& dir : owned_dirs_) {
    if (keep_dirs) {
      std::fprintf(stderr, "ferry: keeping %s (FERRY_KEEP_TEST_DIRS=1)\n", dir.c_str());
      continue;
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
}

std::string LocalPostgres::Conninfo(absl::string_view dbname) const {
  return absl::StrCat("host=127.0.0.1 port=", port_, " user=postgres dbname=", QuoteConninfoValue(dbname));
}

absl::StatusOr<std::string> LocalPostgres::Query(absl::string_view sql, absl::string_view dbname) const {
  FERRY_ASSIGN_OR_RETURN(const std::string bin, PgBinDir());
  // psql runs as we are (trust auth as user postgres): no runuser round trip per query.
  RunOptions o;
  o.timeout_seconds = 600;
  FERRY_ASSIGN_OR_RETURN(CommandResult r,
                         RunCommand({bin + "/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h",
                                     "127.0.0.1", "-p", std::to_string(port_), "-U", kServerUser, "-d",
                                     std::string(dbname), "-c", std::string(sql)},
                                    o));
  if (r.exit_code != 0) {
    const std::string message = absl::StrCat("query on 127.0.0.1:", port_, "/", dbname, ": ", OneLine(r.err));
    // psql exits 2 when the connection failed or was lost; 1 (or 3 for a script) when the
    // server rejected a statement.
    if (r.exit_code == 2) return absl::UnavailableError(message);
    return absl::InvalidArgumentError(message);
  }
  return std::string(absl::StripAsciiWhitespace(r.out));
}

absl::StatusOr<CommandResult> LocalPostgres::RunTool(const std::vector<std::string>& argv) const {
  if (argv.empty()) return absl::InvalidArgumentError("run PostgreSQL tool: empty argv");
  FERRY_ASSIGN_OR_RETURN(const std::string bin, PgBinDir());
  std::vector<std::string> resolved = argv;
  if (!absl::StrContains(resolved[0], '/')) resolved[0] = absl::StrCat(bin, "/", resolved[0]);
  RunOptions o = AsServerUser(1800);
  o.env = {"PGHOST=127.0.0.1", absl::StrCat("PGPORT=", port_), "PGUSER=postgres"};
  return RunCommand(resolved, o);
}

absl::Status LocalPostgres::Stop() {
  if (!running_) return absl::OkStatus();
  const std::string& bin = server_bin_;
  FERRY_ASSIGN_OR_RETURN(CommandResult r,
                         RunCommand({bin + "/pg_ctl", "-D", data_dir_, "-m", "fast", "-w", "-t",
                                     std::to_string(kStopTimeoutSeconds), "stop"},
                                    AsServerUser(kStopTimeoutSeconds + 30)));
  if (r.exit_code != 0) {
    // Already gone (killed behind our back): nothing to stop.
    absl::StatusOr<int> pid = PostmasterPid();
    if (!pid.ok() || !ProcessAlive(*pid)) {
      running_ = false;
      return absl::OkStatus();
    }
    return absl::UnavailableError(absl::StrCat("stop PostgreSQL in ", data_dir_, ": pg_ctl exit ", r.exit_code,
                                               ": ", OneLine(r.err), "; server log: ", LogTail()));
  }
  running_ = false;
  return absl::OkStatus();
}

absl::Status LocalPostgres::Kill() {
  absl::StatusOr<int> pid = PostmasterPid();
  if (!pid.ok() || !ProcessAlive(*pid)) {
    running_ = false;
    return absl::OkStatus();
  }
  // Stopped, the postmaster cannot fork another backend between our listing its children
  // and killing them. Every child leads its own process group (the postmaster setsid()s
  // them), which also holds what it runs, e.g. restore_command: kill the groups.
  kill(*pid, SIGSTOP);
  std::vector<int> children = ChildrenOf(*pid);
  kill(*pid, SIGKILL);
  for (int child : children) {
    kill(-child, SIGKILL);
    kill(child, SIGKILL);
  }
  // A new postmaster on this data dir refuses to start while any old process still holds
  // the shared memory, so wait for every one of them, and for the port to close.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  auto all_gone = [&] {
    if (ProcessAlive(*pid)) return false;
    for (int child : children) {
      if (ProcessAlive(child)) return false;
    }
    return !PortAcceptsConnections(port_);
  };
  while (!all_gone()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("kill PostgreSQL in ", data_dir_, ": postmaster ", *pid, " or its children still alive after 30 s"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  running_ = false;
  return absl::OkStatus();
}

absl::Status LocalPostgres::WaitReady(int timeout_seconds) {
  FERRY_ASSIGN_OR_RETURN(const std::string bin, PgBinDir());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  for (;;) {
    // pg_isready exits 0 when the server accepts connections, 1 while it rejects them
    // (starting up, or in recovery before consistency), 2 when nothing answers.
    RunOptions o;
    o.timeout_seconds = 30;
    FERRY_ASSIGN_OR_RETURN(CommandResult r, RunCommand({bin + "/pg_isready", "-q", "-h", "127.0.0.1", "-p",
                                                        std::to_string(port_), "-U", kServerUser, "-t", "2"},
                                                       o));
    if (r.exit_code == 0) return absl::OkStatus();
    absl::StatusOr<int> pid = PostmasterPid();
    if (!pid.ok() || !ProcessAlive(*pid)) {
      running_ = false;
      return absl::FailedPreconditionError(
          absl::StrCat("PostgreSQL in ", data_dir_, " exited before accepting connections; server log: ", LogTail()));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("PostgreSQL on 127.0.0.1:", port_, " (", data_dir_,
                                                      ") not accepting connections after ", timeout_seconds,
                                                      " s; server log: ", LogTail()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

absl::StatusOr<int> LocalPostgres::PostmasterPid() const {
  const std::string path = data_dir_ + "/postmaster.pid";
  std::ifstream in(path);
  std::string line;
  int pid = 0;
  if (!std::getline(in, line) || !absl::SimpleAtoi(line, &pid) || pid <= 0) {
    return absl::NotFoundError(absl::StrCat("no postmaster pid in ", path));
  }
  return pid;
}

std::string LocalPostgres::LogTail() const {
  std::ifstream in(log_path_, std::ios::binary);
  if (!in) return "(no log)";
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  // The last few lines say why; earlier ones are the previous start's.
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n', absl::SkipWhitespace());
  const size_t first = lines.size() > 8 ? lines.size() - 8 : 0;
  std::string tail;
  for (size_t i = first; i < lines.size(); ++i) absl::StrAppend(&tail, lines[i], "\n");
  return OneLine(tail);
}

}  // namespace ferry::local
