// The ferry binary: parses the command line and runs one subcommand (tools/cmd_*.cc).
#include <sys/resource.h>

#include "absl/synchronization/mutex.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  // Debian's abseil is built without NDEBUG, so every Mutex lock would also feed its deadlock
  // detector's lock graph (1-2 % of the service's CPU in a profile). The tests, which link
  // their own main, keep it on and would catch a lock-order cycle.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // The service holds a descriptor per archive file it writes, per source connection and per
  // HTTP client; the usual soft limit of 1024 is a default for interactive shells, not a
  // budget. Raise it to the hard limit, as servers do.
  struct rlimit files;
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &files);
  }
  return ferry::tools::RunCli(argc, argv);
}
