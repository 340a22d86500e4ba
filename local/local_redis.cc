#include "local/local_redis.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/redis/client.h"
#include "local/local_postgres.h"
#include "local/process.h"
#include "pipeline/check.h"

namespace ferry::local {
namespace {

constexpr char kRedisServer[] = "/usr/bin/redis-server";

bool Alive(int pid) {
  if (pid <= 0) return false;
  // Reap it if it is our child and has exited; otherwise ask /proc.
  int status = 0;
  if (waitpid(pid, &status, WNOHANG) == pid) return false;
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(in, line)) return false;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalRedis>> LocalRedis::Start(const LocalRedisOptions& options) {
  if (access(kRedisServer, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(kRedisServer,
                                                      " not found: install the Debian package redis-server (Redis 7)"));
  }
  std::unique_ptr<LocalRedis> r(new LocalRedis());
  if (options.dir.empty()) {
    FERRY_ASSIGN_OR_RETURN(r->dir_, MakeTempDir("ferry-redis"));
    r->owns_dir_ = std::getenv("FERRY_KEEP_TEST_DIRS") == nullptr;
  } else {
    r->dir_ = std::filesystem::absolute(options.dir).string();
    std::error_code ec;
    std::filesystem::create_directories(r->dir_, ec);
    if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("create ", r->dir_));
  }
  r->log_path_ = r->dir_ + "/redis.log";
  r->auth_user_ = options.auth_user;
  r->auth_password_ = options.auth_password;
  std::error_code size_ec;
  const auto log_size = std::filesystem::file_size(r->log_path_, size_ec);
  r->log_offset_ = size_ec ? 0 : log_size;  // a restarted server appends to its old log
  if (options.port > 0) {
    r->port_ = options.port;
  } else {
    FERRY_ASSIGN_OR_RETURN(r->port_, FindFreeLoopbackPort());
  }
  std::vector<std::string> argv = {kRedisServer,
                                   "--port", absl::StrCat(r->port_),
                                   "--bind", "127.0.0.1",
                                   "--dir", r->dir_,
                                   "--logfile", r->log_path_,
                                   "--daemonize", "no",
                                   "--save", "",
                                   "--appendonly", "no",
                                   "--enable-debug-command", "local"};
  argv.insert(argv.end(), options.args.begin(), options.args.end());
  // Built before fork: the child of a multi-threaded process may only make async-signal-safe calls.
  std::vector<char*> exec_args;
  for (std::string& a : argv) exec_args.push_back(a.data());
  exec_args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    // Its own session: the server outlives us when detached and ignores our terminal.
    DetachFromSession();
    execv(kRedisServer, exec_args.data());
    _exit(127);
  }
  r->pid_ = pid;
  FERRY_RETURN_IF_ERROR(r->WaitReady(600));  // a large restored AOF takes a while to load
  return r;
}

LocalRedis::~LocalRedis() {
  if (pid_ > 0 && !Stop().ok()) (void)Kill();
  if (owns_dir_) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string LocalRedis::Address() const { return absl::StrCat("127.0.0.1:", port_); }

std::string LocalRedis::LogSince(uint64_t offset) const {
  std::ifstream in(log_path_);
  in.seekg(static_cast<std::streamoff>(offset));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string LocalRedis::LogTail() const {
  std::ifstream in(log_path_);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  const size_t from = lines.size() > 5 ? lines.size() - 5 : 0;
  return absl::StrJoin(lines.begin() + static_cast<long>(from), lines.end(), " | ");
}

absl::Status LocalRedis::WaitReady(int timeout_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!Alive(pid_)) {
      pid_ = -1;
      return absl::FailedPreconditionError(absl::StrCat("redis-server on port ", port_, " exited: ", LogTail()));
    }
    // INFO can answer "loading:0" between the files of a multi-part AOF: only the log line
    // printed once everything is loaded says the dataset is complete.
    auto loading = Command({"INFO", "persistence"});
    if (loading.ok() && absl::StrContains(*loading, "loading:0") &&
        absl::StrContains(LogSince(log_offset_), "Ready to accept connections")) {
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("redis-server on port ", port_, " not ready within ",
                                                  timeout_seconds, " s: ", LogTail()));
}

client::redis::RedisEndpoint LocalRedis::Endpoint() const {
  client::redis::RedisEndpoint e;
  e.port = port_;
  e.user = auth_user_;
  e.password = auth_password_;
  return e;
}

absl::StatusOr<std::string> LocalRedis::Command(const std::vector<std::string>& argv) const {
  return client::redis::RunRedisCommand(Endpoint(), argv);
}

absl::Status LocalRedis::Stop() {
  if (!Alive(pid_)) {
    pid_ = -1;
    return absl::OkStatus();
  }
  (void)Command({"SHUTDOWN", "NOSAVE"});  // the connection drops as the server goes
  for (int i = 0; i < 300; ++i) {
    if (!Alive(pid_)) {
      pid_ = -1;
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("redis-server pid ", pid_, " did not stop"));
}

absl::Status LocalRedis::Kill() {
  if (pid_ <= 0) return absl::OkStatus();
  kill(pid_, SIGKILL);
  for (int i = 0; i < 500 && Alive(pid_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  pid_ = -1;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ReplicaAckedOffset(const LocalRedis& redis) {
  FERRY_ASSIGN_OR_RETURN(const std::string line, client::redis::RedisInfoField(redis.Endpoint(), "slave0"));
  if (!absl::StrContains(line, "state=online")) {
    return absl::NotFoundError(absl::StrCat("redis on port ", redis.port(), ": no replica online"));
  }
  for (absl::string_view kv : absl::StrSplit(line, ',')) {
    int64_t offset = 0;
    if (absl::ConsumePrefix(&kv, "offset=") && absl::SimpleAtoi(kv, &offset)) return offset;
  }
  return absl::NotFoundError(absl::StrCat("redis on port ", redis.port(), ": slave0 has no offset: ", line));
}

absl::Status WaitReplicaAcked(const LocalRedis& redis, int timeout_seconds) {
  for (int i = 0; i < timeout_seconds * 10; ++i) {
    auto offset = client::redis::RedisInfoField(redis.Endpoint(), "master_repl_offset");
    auto acked = ReplicaAckedOffset(redis);
    if (offset.ok() && acked.ok() && *offset == absl::StrCat(*acked)) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat("redis on port ", redis.port(), ": its replica did not acknowledge the stream within ",
                                                  timeout_seconds, " s"));
}

absl::StatusOr<std::string> RedisDigest(const LocalRedis& redis) { return redis.Command({"DEBUG", "DIGEST"}); }

}  // namespace ferry::local
