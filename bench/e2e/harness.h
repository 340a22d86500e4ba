// Shared pieces of the end-to-end benchmarks: child processes measured with wait4, disk usage,
// and LSN queries.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "local/local_postgres.h"
#include "pipeline/position.h"

namespace ferry::bench {

// Starts argv (argv[0] a path) with stdout and stderr appended to `log`.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log);

// What a child used, from wait4's rusage.
struct Usage {
  int status = 0;
  double cpu_s = 0;  // user + system
  double max_rss_mib = 0;
};
// Sends `sig` (0: none, the child ends by itself) and reaps the child.
Usage Reap(pid_t pid, int sig);

// A running child's user + system CPU so far (/proc/<pid>/stat), to subtract its start-up
// from what Reap reports; 0 when it cannot be read.
double ProcessCpuSeconds(pid_t pid);

// Bytes allocated to the files under `dir`.
uint64_t DiskBytes(const std::string& dir);

// One LSN from a query, e.g. "select pg_current_wal_lsn()".
absl::StatusOr<pipeline::Lsn> QueryLsn(const local::LocalPostgres& pg, const std::string& sql);

}  // namespace ferry::bench
