#include "tools/sandbox/local_postgres.h"

#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "pipeline/check.h"

namespace ferry::tools {
namespace {

constexpr char kUser[] = "postgres";

absl::StatusOr<int> FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError("bind a free loopback port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace

absl::Status GiveToServerUser(const std::string& path) {
  if (!RunningAsRoot()) return absl::OkStatus();
  passwd* pw = getpwnam(kUser);
  if (pw == nullptr) {
    return absl::FailedPreconditionError("no 'postgres' OS user: install postgresql-15 (scripts/install-deps.sh)");
  }
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    for (auto it = std::filesystem::recursive_directory_iterator(path, ec);
         it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      (void)lchown(it->path().c_str(), pw->pw_uid, pw->pw_gid);
    }
  }
  if (chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    return absl::InternalError(absl::StrCat("chown ", path, " to postgres"));
  }
  return absl::OkStatus();
}

namespace {

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > 1500) s = s.substr(s.size() - 1500);
  return s;
}

RunOptions AsServer() {
  RunOptions o;
  o.as_user = kUser;
  o.timeout_seconds = 600;
  return o;
}

}  // namespace

std::string PgBinDir() { return "/usr/lib/postgresql/15/bin"; }

absl::StatusOr<std::unique_ptr<LocalPostgres>> LocalPostgres::Create(const LocalPostgresOptions& options) {
  if (access((PgBinDir() + "/postgres").c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostgreSQL 15 not found in ", PgBinDir(), ": install postgresql-15 (scripts/install-deps.sh)"));
  }
  std::unique_ptr<LocalPostgres> pg(new LocalPostgres());
  pg->base_dir_ = options.base_dir;
  if (pg->base_dir_.empty()) {
    char tmpl[] = "/tmp/ferry-pg-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp");
    pg->base_dir_ = tmpl;
    pg->owns_base_dir_ = true;
  }
  std::filesystem::create_directories(pg->base_dir_);
  chmod(pg->base_dir_.c_str(), 0755);  // the postgres user must reach the data dir
  pg->data_dir_ = pg->base_dir_ + "/data";
  pg->log_path_ = pg->base_dir_ + "/postgres.log";
  FERRY_RETURN_IF_ERROR(GiveToServerUser(pg->base_dir_));
  FERRY_ASSIGN_OR_RETURN(CommandResult init,
                         RunCommand({PgBinDir() + "/initdb", "-D", pg->data_dir_, "-U", kUser, "-A", "trust",
                                     "--no-sync", "-E", "UTF8", "--locale=C"},
                                    AsServer()));
  if (init.exit_code != 0) return absl::InternalError(absl::StrCat("initdb ", pg->data_dir_, ": ", init.err));
  std::ofstream conf(pg->data_dir_ + "/postgresql.conf", std::ios::app);
  conf << "\n# ferry test/sandbox server\nlisten_addresses = '127.0.0.1'\nwal_level = logical\n"
       << "max_wal_senders = 10\nmax_replication_slots = 10\nfsync = on\nshared_buffers = 64MB\n";
  for (const std::string& s : options.settings) conf << s << "\n";
  conf.close();
  std::ofstream hba(pg->data_dir_ + "/pg_hba.conf");
  hba << "local all all trust\nhost all all 127.0.0.1/32 trust\n"
      << "local replication all trust\nhost replication all 127.0.0.1/32 trust\n";
  hba.close();
  FERRY_RETURN_IF_ERROR(GiveToServerUser(pg->base_dir_));
  FERRY_RETURN_IF_ERROR(pg->Start());
  return pg;
}

absl::StatusOr<std::unique_ptr<LocalPostgres>> LocalPostgres::StartExisting(const std::string& data_dir) {
  std::unique_ptr<LocalPostgres> pg(new LocalPostgres());
  pg->data_dir_ = data_dir;
  pg->base_dir_ = data_dir;  // its socket goes in the data dir: the parent may be root's
  pg->log_path_ = data_dir + ".log";
  std::filesystem::remove(data_dir + "/postmaster.pid");
  chmod(data_dir.c_str(), 0700);
  FERRY_RETURN_IF_ERROR(GiveToServerUser(data_dir));
  if (RunningAsRoot()) {
    std::ofstream(pg->log_path_).close();
    FERRY_RETURN_IF_ERROR(GiveToServerUser(pg->log_path_));
  }
  FERRY_RETURN_IF_ERROR(pg->Start());
  return pg;
}

absl::Status LocalPostgres::Start() {
  FERRY_ASSIGN_OR_RETURN(port_, FreeLoopbackPort());
  // Port and socket directory on the command line: they beat whatever a copied data dir holds.
  const std::string opts = absl::StrCat("-p ", port_, " -k ", base_dir_, " -c listen_addresses=127.0.0.1");
  FERRY_ASSIGN_OR_RETURN(CommandResult r,
                         RunCommand({PgBinDir() + "/pg_ctl", "-D", data_dir_, "-l", log_path_, "-o", opts, "-w",
                                     "-t", "120", "start"},
                                    AsServer()));
  if (r.exit_code != 0) {
    return absl::InternalError(absl::StrCat("start PostgreSQL in ", data_dir_, ": ", r.out, r.err,
                                            " server log: ", Tail(log_path_)));
  }
  running_ = true;
  return absl::OkStatus();
}

LocalPostgres::~LocalPostgres() {
  if (running_ && !Stop().ok()) (void)Kill();
  const char* keep = getenv("FERRY_KEEP_TEST_DIRS");
  if (owns_base_dir_ && (keep == nullptr || std::string(keep) != "1")) {
    std::error_code ec;
    std::filesystem::remove_all(base_dir_, ec);
  }
}

std::string LocalPostgres::Conninfo(absl::string_view dbname) const {
  return absl::StrCat("host=127.0.0.1 port=", port_, " user=postgres dbname=", dbname);
}

absl::StatusOr<std::string> LocalPostgres::Query(absl::string_view sql) const {
  FERRY_ASSIGN_OR_RETURN(CommandResult r,
                         RunCommand({PgBinDir() + "/psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                                     "127.0.0.1", "-p", std::to_string(port_), "-U", "postgres", "-d", "postgres",
                                     "-c", std::string(sql)},
                                    AsServer()));
  if (r.exit_code != 0) {
    return absl::InternalError(absl::StrCat("psql on port ", port_, ": ", absl::StripAsciiWhitespace(r.err)));
  }
  return std::string(absl::StripAsciiWhitespace(r.out));
}

absl::StatusOr<CommandResult> LocalPostgres::RunTool(std::vector<std::string> argv) const {
  argv[0] = PgBinDir() + "/" + argv[0];
  return RunCommand(argv, AsServer());
}

absl::Status LocalPostgres::Stop() {
  if (!running_) return absl::OkStatus();
  FERRY_ASSIGN_OR_RETURN(CommandResult r,
                         RunCommand({PgBinDir() + "/pg_ctl", "-D", data_dir_, "-m", "fast", "-w", "-t", "60", "stop"},
                                    AsServer()));
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("stop PostgreSQL in ", data_dir_, ": ", r.err));
  running_ = false;
  return absl::OkStatus();
}

absl::Status LocalPostgres::Kill() {
  if (!running_) return absl::OkStatus();
  std::ifstream pidfile(data_dir_ + "/postmaster.pid");
  std::string line;
  std::getline(pidfile, line);
  int pid = 0;
  if (!absl::SimpleAtoi(line, &pid) || pid <= 0) {
    return absl::InternalError(absl::StrCat("no postmaster pid in ", data_dir_));
  }
  // The postmaster's children die with it; wait until the whole group is gone.
  kill(pid, SIGKILL);
  for (int i = 0; i < 300 && kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  RunCommand({"pkill", "-9", "-f", absl::StrCat("-D ", data_dir_)}).IgnoreError();
  for (int i = 0; i < 300; ++i) {
    auto r = RunCommand({"pgrep", "-f", absl::StrCat("-D ", data_dir_)});
    if (r.ok() && r->exit_code != 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  running_ = false;
  return absl::OkStatus();
}

}  // namespace ferry::tools
