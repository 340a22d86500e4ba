// Shared pieces of the end-to-end benchmarks: child processes measured with wait4, disk usage,
// and LSN queries.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "local/local_postgres.h"
#include "pipeline/position.h"
#include "service/service.h"

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

// This process's user + system CPU so far (for work a benchmark runs in-process).
double SelfCpuSeconds();

// A new directory /tmp/ferry-bench-<name>-XXXXXX that the postgres user may traverse (its
// servers and tools live below it).
std::string ScratchDir(const std::string& name);

// Bytes allocated to the files under `dir`.
uint64_t DiskBytes(const std::string& dir);

// The ferry service for one PostgreSQL source "main" (posix writer, no scheduled backups or
// drills: a drill's restore_command would run the benchmark binary, not ferry), running on a
// thread of this process into `archive` until Stop.
class BenchService {
 public:
  static absl::StatusOr<std::unique_ptr<BenchService>> Start(const std::string& dir, const std::string& archive,
                                                             const std::string& conninfo);
  ~BenchService() { (void)Stop(); }
  const config::SourceConfig& source() const { return config_.sources[0]; }
  // Stops the service; its result.
  absl::Status Stop();

 private:
  BenchService() = default;
  config::Config config_;
  std::unique_ptr<service::Service> service_;
  std::thread runner_;
  absl::Status result_;
};

// `ferry kafka-mock --brokers 1` as a child (its pid in *pid, for Reap), logging to `log`;
// returns its bootstrap address once it has printed it.
absl::StatusOr<std::string> StartKafkaMock(const std::string& ferry, const std::string& log, pid_t* pid);

// One LSN from a query, e.g. "select pg_current_wal_lsn()".
absl::StatusOr<pipeline::Lsn> QueryLsn(const local::LocalPostgres& pg, const std::string& sql);

}  // namespace ferry::bench
