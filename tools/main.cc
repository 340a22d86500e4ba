// The ferry binary: parses the command line and runs one subcommand (tools/cmd_*.cc).
#include "absl/synchronization/mutex.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  // Debian's abseil is built without NDEBUG, so every Mutex lock would also feed its deadlock
  // detector's lock graph (1-2 % of the service's CPU in a profile). The tests, which link
  // their own main, keep it on and would catch a lock-order cycle.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return ferry::tools::RunCli(argc, argv);
}
