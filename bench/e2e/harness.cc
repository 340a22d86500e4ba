#include "bench/e2e/harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "local/local_postgres.h"
#include "pipeline/check.h"

namespace ferry::bench {

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

Usage Reap(pid_t pid, int sig) {
  if (sig != 0) kill(pid, sig);
  Usage u;
  struct rusage ru {};
  wait4(pid, &u.status, 0, &ru);
  u.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  u.max_rss_mib = static_cast<double>(ru.ru_maxrss) / 1024;
  return u;
}

double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces, so: after the last ')'): state is
  // field 3, utime and stime are fields 14 and 15, in clock ticks.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
  if (fields.size() < 13) return 0;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::strtod(fields[11].c_str(), nullptr) + std::strtod(fields[12].c_str(), nullptr)) / ticks;
}

double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

std::string ScratchDir(const std::string& name) {
  std::string dir = absl::StrCat("/tmp/ferry-bench-", name, "-XXXXXX");
  FERRY_CHECK(mkdtemp(dir.data()) != nullptr);
  std::filesystem::permissions(dir, std::filesystem::perms::others_exec, std::filesystem::perm_options::add);
  return dir;
}

uint64_t DiskBytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    struct ::stat st;
    if (e.is_regular_file(ec) && ::stat(e.path().c_str(), &st) == 0) n += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return n;
}

absl::StatusOr<pipeline::Lsn> QueryLsn(const local::LocalPostgres& pg, const std::string& sql) {
  auto s = pg.Query(sql);
  if (!s.ok()) return s.status();
  return pipeline::Lsn::Parse(*s);
}

absl::StatusOr<std::string> StartKafkaMock(const std::string& ferry, const std::string& log, pid_t* pid) {
  *pid = Spawn({ferry, "kafka-mock", "--brokers", "1"}, log);
  // Its stdout is the address alone; its stderr lines start with "ferry".
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ifstream in(log);
    for (std::string line; std::getline(in, line);) {
      if (!absl::StartsWith(line, "ferry") && absl::StrContains(line, ":")) return line;
    }
  }
  return absl::UnavailableError(absl::StrCat("ferry kafka-mock printed no bootstrap address; see ", log));
}

absl::StatusOr<std::unique_ptr<BenchService>> BenchService::Start(const std::string& dir, const std::string& archive,
                                                                  const std::string& conninfo) {
  FERRY_RETURN_IF_ERROR(local::MakeArchiveDirForServerUser(archive));
  const std::string text = absl::StrCat(
      "region = \"bench\"\ndrill_every = \"0s\"\n[archive]\npath = \"", archive, "\"\nwriter = \"posix\"\n\n",
      "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"", conninfo, "\"\nscheduled_backups = false\n");
  std::unique_ptr<BenchService> s(new BenchService());
  FERRY_ASSIGN_OR_RETURN(s->config_, config::ParseConfig(text, dir + "/ferry.toml"));
  FERRY_ASSIGN_OR_RETURN(s->service_, service::Service::Create(s->config_));
  BenchService* raw = s.get();
  s->runner_ = std::thread([raw] { raw->result_ = raw->service_->Run(); });
  return s;
}

absl::Status BenchService::Stop() {
  if (!runner_.joinable()) return result_;
  service_->Stop();
  runner_.join();
  return result_;
}

}  // namespace ferry::bench
