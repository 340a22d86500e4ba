// fork/exec with stdout and stderr read through poll, so neither pipe can fill and block the
// child while we wait on the other.
#include "local/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace ferry::local {
namespace {

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  // Closes the descriptor held, then holds `fd`.
  void Reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// What the child reports through the exec-error pipe when it cannot become the command.
struct ChildFailure {
  int step;  // kStepChdir or kStepExec
  int error;
};
constexpr int kStepChdir = 1;
constexpr int kStepExec = 2;

absl::Status MakePipe(Fd& read_end, Fd& write_end, absl::string_view what) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("pipe for ", what));
  read_end.Reset(fds[0]);
  write_end.Reset(fds[1]);
  return absl::OkStatus();
}

// The pipes between parent and child: its stdout, its stderr, and the exec-error pipe.
struct ChildPipes {
  Fd out_read, out_write;
  Fd err_read, err_write;
  Fd fail_read, fail_write;
};

absl::Status OpenPipes(ChildPipes& p, absl::string_view what) {
  if (absl::Status s = MakePipe(p.out_read, p.out_write, what); !s.ok()) return s;
  if (absl::Status s = MakePipe(p.err_read, p.err_write, what); !s.ok()) return s;
  return MakePipe(p.fail_read, p.fail_write, what);
}

// Resolves a program name the way execvp would, but in the parent, so that "not installed"
// is an error naming the program rather than exit code 127.
absl::StatusOr<std::string> ResolveProgram(const std::string& name, const std::string& path_var) {
  if (absl::StrContains(name, '/')) return name;
  for (absl::string_view dir : absl::StrSplit(path_var, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", name);
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return absl::NotFoundError(absl::StrCat("run ", name, ": no such program in PATH ", path_var));
}

// Our environment with `extra` KEY=VALUE entries added or replacing same-named ones.
std::vector<std::string> ChildEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  for (const std::string& kv : extra) {
    const std::string key = kv.substr(0, kv.find('=') + 1);
    std::erase_if(env, [&](const std::string& e) { return absl::StartsWith(e, key); });
    env.push_back(kv);
  }
  return env;
}

std::string EnvValue(const std::vector<std::string>& env, absl::string_view key) {
  const std::string prefix = absl::StrCat(key, "=");
  for (const std::string& e : env) {
    if (absl::StartsWith(e, prefix)) return e.substr(prefix.size());
  }
  return "";
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Reads what a non-blocking pipe holds; closes it at EOF.
void ReadAvailable(Fd& fd, std::string& into) {
  char buf[65536];
  while (fd.get() >= 0) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n > 0) {
      into.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      return;
    } else {  // EOF, or an error no retry would fix
      fd.Reset();
    }
  }
}

int ExitCode(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 255;
}

// SIGKILLs the child's process group and reaps the child.
void KillGroup(pid_t pid) {
  kill(-pid, SIGKILL);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

std::string LastLine(const std::string& text) {
  std::string s(absl::StripTrailingAsciiWhitespace(text));
  size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

// The command as the child is to run it.
struct ChildCommand {
  std::vector<std::string> argv;  // with `runuser -u USER --` in front when switching user
  std::vector<std::string> env;
  std::string program;  // argv[0] resolved through PATH
  std::string cwd;      // empty: ours
};

absl::StatusOr<ChildCommand> PrepareCommand(const std::vector<std::string>& argv_in, const RunOptions& options) {
  ChildCommand c;
  c.env = ChildEnvironment(options.env);
  const std::string path_var =
      EnvValue(c.env, "PATH").empty() ? "/usr/local/bin:/usr/bin:/bin" : EnvValue(c.env, "PATH");
  const bool switch_user = !options.as_user.empty() && RunningAsRoot();
  c.cwd = !options.cwd.empty() ? options.cwd : std::string(switch_user ? "/" : "");
  if (switch_user) {
    c.argv = {"runuser", "-u", options.as_user, "--"};
    // runuser execs the command through PATH itself; check here for a clear error.
    auto target = ResolveProgram(argv_in[0], path_var);
    if (!target.ok()) return target.status();
  }
  c.argv.insert(c.argv.end(), argv_in.begin(), argv_in.end());
  auto program = ResolveProgram(c.argv[0], path_var);
  if (!program.ok()) return program.status();
  c.program = *std::move(program);
  return c;
}

// The child's C strings, built before fork: after fork in a multi-threaded process only
// async-signal-safe calls are allowed (no malloc).
struct ChildExec {
  const char* program;
  char* const* argv;
  char* const* env;
  const char* cwd;  // null: ours
};

// In the child after fork: becomes the command, or writes why not to the exec-error pipe
// and exits 127. Async-signal-safe calls only.
[[noreturn]] void ExecChild(const ChildExec& c, const ChildPipes& p) {
  setpgid(0, 0);
  // A blocked or ignored signal survives exec: give the command the defaults it expects.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);
  int devnull = open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, 0);
  dup2(p.out_write.get(), 1);
  dup2(p.err_write.get(), 2);
  // Whatever else we hold open (archive files, sockets) must not leak into a server that
  // outlives us. Best effort: kernels before 5.11 lack the flag.
  syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
  ChildFailure failure{0, 0};
  if (c.cwd != nullptr && chdir(c.cwd) != 0) {
    failure = {kStepChdir, errno};
  } else {
    execve(c.program, c.argv, c.env);
    failure = {kStepExec, errno};
  }
  (void)!write(p.fail_write.get(), &failure, sizeof(failure));
  _exit(127);
}

// In the parent: OK once the child has exec'd; its chdir or exec error (the child reaped)
// otherwise. The exec-error pipe closes on a successful exec (O_CLOEXEC) or carries why it
// failed.
absl::Status AwaitExec(Fd& fail_read, pid_t pid, const std::string& shown, const ChildCommand& c) {
  ChildFailure failure{0, 0};
  ssize_t n;
  do {
    n = read(fail_read.get(), &failure, sizeof(failure));
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(failure))) return absl::OkStatus();
  int status;
  waitpid(pid, &status, 0);
  return absl::ErrnoToStatus(failure.error, failure.step == kStepChdir
                                                ? absl::StrCat("run ", shown, ": chdir ", c.cwd)
                                                : absl::StrCat("run ", shown, ": exec ", c.program));
}

// Reads the child's stdout and stderr until it exits; at the timeout (0: none) kills its
// process group.
absl::StatusOr<CommandResult> CollectOutput(pid_t pid, ChildPipes& p, int timeout_seconds, const std::string& shown) {
  // A pidfd becomes readable when the child exits, so one poll waits for output and exit
  // alike. Without one (kernel < 5.3), poll in short slices and ask waitpid.
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  fcntl(p.out_read.get(), F_SETFL, O_NONBLOCK);
  fcntl(p.err_read.get(), F_SETFL, O_NONBLOCK);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  CommandResult result;
  int wait_status = 0;
  bool exited = false;
  while (!exited) {
    int wait_ms = pidfd.get() >= 0 ? -1 : 20;
    if (timeout_seconds > 0) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        KillGroup(pid);
        return absl::DeadlineExceededError(absl::StrCat("run ", shown, ": still running after ", timeout_seconds,
                                                        " s; killed its process group; last stderr line: ",
                                                        LastLine(result.err)));
      }
      const int left_ms = static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
      wait_ms = wait_ms < 0 ? left_ms : std::min(wait_ms, left_ms);
    }
    pollfd fds[3] = {{p.out_read.get(), POLLIN, 0}, {p.err_read.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    if (poll(fds, 3, wait_ms) < 0 && errno != EINTR) {
      const int error = errno;
      KillGroup(pid);
      return absl::ErrnoToStatus(error, absl::StrCat("poll output of ", shown));
    }
    ReadAvailable(p.out_read, result.out);
    ReadAvailable(p.err_read, result.err);
    pid_t r = waitpid(pid, &wait_status, WNOHANG);
    exited = r == pid || (r < 0 && errno == ECHILD);
  }
  // Whatever the child wrote before exiting is in the pipes now. A daemon it started may
  // hold the write ends for hours; its later output is not ours to wait for.
  ReadAvailable(p.out_read, result.out);
  ReadAvailable(p.err_read, result.err);
  result.exit_code = ExitCode(wait_status);
  return result;
}

}  // namespace

bool RunningAsRoot() { return geteuid() == 0; }

std::string ShellQuote(absl::string_view word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || std::strchr("@%_-+=:,./", c) != nullptr;
  });
  if (plain) return std::string(word);
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += "'";
  return out;
}

std::string ShellJoin(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    out += ShellQuote(a);
  }
  return out;
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv_in,
                                         const RunOptions& options) {
  if (argv_in.empty()) return absl::InvalidArgumentError("run command: empty argv");
  const std::string shown = ShellJoin(argv_in);
  auto command = PrepareCommand(argv_in, options);
  if (!command.ok()) return command.status();
  // Everything the child needs is built before fork: after fork in a multi-threaded process
  // only async-signal-safe calls are allowed (no malloc).
  std::vector<char*> c_argv = CStrings(command->argv);
  std::vector<char*> c_env = CStrings(command->env);
  const ChildExec exec{command->program.c_str(), c_argv.data(), c_env.data(),
                       command->cwd.empty() ? nullptr : command->cwd.c_str()};
  ChildPipes pipes;
  if (absl::Status s = OpenPipes(pipes, shown); !s.ok()) return s;

  const pid_t pid = fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, absl::StrCat("fork for ", shown));
  if (pid == 0) ExecChild(exec, pipes);
  setpgid(pid, pid);  // also here: the timeout must be able to kill the group from now on
  pipes.out_write.Reset();
  pipes.err_write.Reset();
  pipes.fail_write.Reset();
  if (absl::Status s = AwaitExec(pipes.fail_read, pid, shown, *command); !s.ok()) return s;
  return CollectOutput(pid, pipes, options.timeout_seconds, shown);
}

bool PortAcceptsConnections(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool connected = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return connected;
}

absl::StatusOr<int> FindFreeLoopbackPort() {
  Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return absl::ErrnoToStatus(errno, "find a free port: socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::ErrnoToStatus(errno, "find a free port: bind 127.0.0.1:0");
  }
  socklen_t len = sizeof(addr);
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::ErrnoToStatus(errno, "find a free port: getsockname");
  }
  return static_cast<int>(ntohs(addr.sin_port));
}

void DetachFromSession() {
  setsid();
  const int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    if (devnull > 2) close(devnull);
  }
}

std::string SelfExecutable() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "ferry";
}

}  // namespace ferry::local
