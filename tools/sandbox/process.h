// Running other programs (PostgreSQL's tools, pgbench, ferry itself) for the sandbox and the
// tests: capture output, optional unprivileged user, bounded time.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::tools {

struct CommandResult {
  int exit_code = 0;  // 128 + signal when killed by a signal
  std::string out;
  std::string err;
};

struct RunOptions {
  std::string as_user;  // run through `runuser -u USER --` when we are root
  int timeout_seconds = 0;  // 0: no limit; else kill the process group, kDeadlineExceeded
};

// Runs argv[0] (looked up in PATH) to completion. Fails only if it cannot be started or
// times out; a non-zero exit is a normal result.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const RunOptions& options = {});

bool RunningAsRoot();

}  // namespace ferry::tools
