// Running other programs (PostgreSQL's tools, pgbench, ferry itself) for the sandbox and the
// integration tests: captured output, an optional unprivileged user, bounded time.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::local {

struct CommandResult {
  int exit_code = 0;  // 128 + signal number when the child was killed by a signal
  std::string out;
  std::string err;
};

struct RunOptions {
  // Runs the command through `runuser -u as_user --`, but only when we are root; otherwise
  // the command runs as we are. Without `cwd`, such a command starts in "/": our own working
  // directory may be unreadable to that user, which PostgreSQL's tools complain about.
  std::string as_user;
  std::string cwd;               // working directory of the child; ours when empty
  std::vector<std::string> env;  // KEY=VALUE added to (or replacing in) our environment
  int timeout_seconds = 0;       // 0: no limit
};

// Runs argv (argv[0] is a path, or a name looked up in PATH) to completion with stdin from
// /dev/null, capturing stdout and stderr. The child leads a new process group.
// Returns the result for any exit, zero or not: a non-zero exit is for the caller to judge.
// Errors: kNotFound when argv[0] is not an executable in PATH, kInvalidArgument for an empty
// argv, kDeadlineExceeded (naming the command) when timeout_seconds pass first — the whole
// process group is then SIGKILLed and reaped — and the errno's code when pipe, fork or
// chdir fail. Output of daemons the command leaves behind is not waited for: reading stops
// once the child itself has exited and its pipes are drained.
// Thread-safe; safe to call from a multi-threaded process (the child only calls
// async-signal-safe functions before exec).
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const RunOptions& options = {});

// Quotes `word` for a POSIX shell: unchanged when it holds only characters no shell
// interprets, else in single quotes ('it'\''s').
std::string ShellQuote(absl::string_view word);

// argv as one line a shell would accept, for messages and logs.
std::string ShellJoin(const std::vector<std::string>& argv);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, closed).
// Another process may take it before the caller binds it; callers that start servers on it
// should treat "address in use" as retryable.
absl::StatusOr<int> FindFreeLoopbackPort();

// True when something accepts TCP connections on 127.0.0.1:port right now.
bool PortAcceptsConnections(int port);

bool RunningAsRoot();

// For a freshly forked child that is to outlive its parent (a background prefetcher, a
// server left running): a session of its own (no terminal, no signals to the parent's
// process group) and stdin/stdout/stderr on /dev/null. Async-signal-safe.
void DetachFromSession();

// The path of the running executable ("ferry" when /proc cannot tell).
std::string SelfExecutable();

}  // namespace ferry::local
