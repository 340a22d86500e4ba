// End-to-end Redis benchmark: ferry against a real Redis replica under the same
// redis-benchmark load, side by side in one run. Measures only (never pass/fail):
//   - the primary's SET throughput alone, with a Redis replica attached, with ferry attached,
//     and with ferry again with a commit_delay (--commit-delay-ms, fewer group commits);
//   - each replica's CPU seconds per GB of replication stream (wait4 of its process, the
//     initial sync of an empty dataset included) and its peak RSS;
//   - how long after the load each replica has acknowledged the primary's whole stream.
// The primary is FLUSHALLed before each phase, so each replica syncs an empty dataset and
// then receives the same command stream.
//
// Writes redis.md and redis.csv to --out.
//
//   build/bench/ferry_bench_redis [--requests 2000000] [--pipeline 16] [--commit-delay-ms 2] [--out bench/results]
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/e2e/harness.h"
#include "client/redis/client.h"
#include "local/local_postgres.h"
#include "local/local_redis.h"
#include "local/process.h"
#include "pipeline/check.h"

namespace ferry::bench {
namespace {

using local::LocalRedis;

struct Row {
  std::string replica;
  double ops_per_s = 0;
  uint64_t stream_bytes = 0;
  double cpu_s = 0;
  double max_rss_mib = 0;
  double ack_lag_s = 0;  // from the load's end until the replica acknowledged all of it
  double cpu_s_per_gb() const { return stream_bytes == 0 ? 0 : cpu_s / (static_cast<double>(stream_bytes) / 1e9); }
};

absl::StatusOr<int64_t> InfoInt(const LocalRedis& r, const std::string& field) {
  FERRY_ASSIGN_OR_RETURN(std::string v, client::redis::RedisInfoField(r.Endpoint(), field));
  int64_t n = 0;
  if (!absl::SimpleAtoi(v, &n)) return absl::InternalError(absl::StrCat("INFO ", field, " = ", v));
  return n;
}

// The offset the primary's first replica has acknowledged (-1 before it is online).
int64_t ReplicaAcked(const LocalRedis& primary) { return local::ReplicaAckedOffset(primary).value_or(-1); }

absl::Status WaitAcked(const LocalRedis& primary, int64_t offset, int seconds) {
  for (int i = 0; i < seconds * 100; ++i) {
    if (ReplicaAcked(primary) >= offset) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError(absl::StrCat("the replica did not acknowledge offset ", offset, " in ", seconds, " s"));
}

// redis-benchmark's SET throughput (requests per second).
absl::StatusOr<double> Load(const LocalRedis& primary, int requests, int pipeline) {
  FERRY_ASSIGN_OR_RETURN(local::CommandResult r,
                         local::RunCommand({"redis-benchmark", "-h", "127.0.0.1", "-p", absl::StrCat(primary.port()), "-t",
                                            "set", "-n", absl::StrCat(requests), "-P", absl::StrCat(pipeline), "-d",
                                            "100", "-r", "1000000", "-c", "50", "-q"}));
  // "SET: 1183431.88 requests per second, p50=0.559 msec"
  for (absl::string_view line : absl::StrSplit(r.out, absl::ByAnyChar("\r\n"))) {
    if (!absl::ConsumePrefix(&line, "SET: ")) continue;
    double v = 0;
    if (absl::SimpleAtod(line.substr(0, line.find(' ')), &v)) return v;
  }
  return absl::InternalError(absl::StrCat("redis-benchmark printed no SET rate: ", r.out, r.err));
}

// One phase: FLUSHALL, start the replica (argv, or none), wait until it is online, run the
// load, wait until it acknowledged everything, stop it.
absl::StatusOr<Row> Phase(const std::string& name, LocalRedis& primary, const std::vector<std::string>& argv,
                          const std::string& log, int requests, int pipeline) {
  Row row{name};
  FERRY_RETURN_IF_ERROR(primary.Command({"FLUSHALL"}).status());
  pid_t pid = -1;
  if (!argv.empty()) {
    pid = Spawn(argv, log);
    for (int i = 0; i < 3000 && ReplicaAcked(primary) < 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (ReplicaAcked(primary) < 0) {
      (void)Reap(pid, SIGKILL);
      return absl::DeadlineExceededError(absl::StrCat(name, " did not come online; its log: ", log));
    }
  }
  FERRY_ASSIGN_OR_RETURN(const int64_t before, InfoInt(primary, "master_repl_offset"));
  FERRY_ASSIGN_OR_RETURN(row.ops_per_s, Load(primary, requests, pipeline));
  FERRY_ASSIGN_OR_RETURN(const int64_t after, InfoInt(primary, "master_repl_offset"));
  row.stream_bytes = static_cast<uint64_t>(after - before);
  if (pid > 0) {
    const auto t0 = std::chrono::steady_clock::now();
    FERRY_RETURN_IF_ERROR(WaitAcked(primary, after, 120));
    row.ack_lag_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const Usage u = Reap(pid, SIGTERM);
    row.cpu_s = u.cpu_s;
    row.max_rss_mib = u.max_rss_mib;
  }
  return row;
}

absl::Status Main(int requests, int pipeline, int commit_delay_ms, const std::string& out_dir) {
  FERRY_ASSIGN_OR_RETURN(const std::string dir, local::MakeTempDir("ferry-bench-redis"));
  local::LocalRedisOptions po;
  po.dir = dir + "/primary";
  std::filesystem::create_directories(po.dir);
  po.args = {"--save", "", "--appendonly", "no", "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"};
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalRedis> primary, LocalRedis::Start(po));

  FERRY_ASSIGN_OR_RETURN(const int replica_port, local::FindFreeLoopbackPort());
  std::filesystem::create_directories(dir + "/replica");
  const std::vector<std::string> replica = {
      "/usr/bin/redis-server", "--port", absl::StrCat(replica_port), "--bind", "127.0.0.1", "--dir", dir + "/replica",
      "--replicaof", "127.0.0.1", absl::StrCat(primary->port()), "--save", "", "--appendonly", "no"};
  // ferry with a config of its own per row (a fresh archive each): `source_extra` goes into
  // the Redis source.
  auto ferry = [&](const std::string& name, const std::string& source_extra) {
    const std::string config = absl::StrCat(dir, "/", name, ".toml");
    std::ofstream(config) << "drill_every = \"0s\"\n[archive]\npath = \"" << dir << "/" << name
                          << "-archive\"\n\n[[source]]\nname = \"cache\"\nkind = \"redis\"\naddress = \""
                          << primary->Address() << "\"\nscheduled_backups = false\n" << source_extra;
    return std::vector<std::string>{FERRY_BINARY, "run", "--config", config};
  };

  std::vector<Row> rows;
  std::printf("bench: redis-benchmark -t set -n %d -P %d -d 100 -c 50, four times\n", requests, pipeline);
  FERRY_ASSIGN_OR_RETURN(Row alone, Phase("no replica", *primary, {}, "", requests, pipeline));
  rows.push_back(alone);
  FERRY_ASSIGN_OR_RETURN(Row redis, Phase("Redis 7 replica", *primary, replica, dir + "/replica.log", requests, pipeline));
  rows.push_back(redis);
  FERRY_ASSIGN_OR_RETURN(Row f, Phase("ferry (archived, io_uring)", *primary, ferry("ferry", ""), dir + "/ferry.log",
                                      requests, pipeline));
  rows.push_back(f);
  // Fewer, larger group commits for at most that much more latency (the source's commit_delay).
  FERRY_ASSIGN_OR_RETURN(Row delayed,
                         Phase(absl::StrCat("ferry, commit_delay ", commit_delay_ms, "ms"), *primary,
                               ferry("ferry-delay", absl::StrCat("commit_delay = \"", commit_delay_ms, "ms\"\n")),
                               dir + "/ferry-delay.log", requests, pipeline));
  rows.push_back(delayed);

  for (const Row& r : rows) {
    std::printf("bench: %-28s %10.0f SET/s  stream %7.1f MB  CPU %6.2f s = %6.1f s/GB  RSS %5.0f MiB  ack lag %.3f s\n",
                r.replica.c_str(), r.ops_per_s, r.stream_bytes / 1e6, r.cpu_s, r.cpu_s_per_gb(), r.max_rss_mib,
                r.ack_lag_s);
  }
  std::filesystem::create_directories(out_dir);
  std::ofstream csv(out_dir + "/redis.csv");
  csv << "replica,set_per_s,stream_bytes,cpu_s,cpu_s_per_gb,max_rss_mib,ack_lag_s\n";
  std::ofstream md(out_dir + "/redis.md");
  md << "| replica | primary SET/s | vs no replica | CPU s per GB of stream | vs Redis replica | peak RSS MiB | ack lag s |\n"
        "|---|---|---|---|---|---|---|\n";
  for (const Row& r : rows) {
    csv << absl::StrFormat("\"%s\",%.0f,%d,%.3f,%.2f,%.1f,%.3f\n", r.replica, r.ops_per_s, r.stream_bytes, r.cpu_s,
                           r.cpu_s_per_gb(), r.max_rss_mib, r.ack_lag_s);
    const bool has_replica = &r != &rows[0];
    md << absl::StrFormat("| %s | %.0f | %.2fx | %s | %s | %s | %s |\n", r.replica, r.ops_per_s,
                          r.ops_per_s / std::max(1.0, rows[0].ops_per_s),
                          has_replica ? absl::StrFormat("%.1f", r.cpu_s_per_gb()) : "-",
                          has_replica ? absl::StrFormat("%.2fx", r.cpu_s_per_gb() / std::max(1e-9, rows[1].cpu_s_per_gb()))
                                      : "-",
                          has_replica ? absl::StrFormat("%.0f", r.max_rss_mib) : "-",
                          has_replica ? absl::StrFormat("%.3f", r.ack_lag_s) : "-");
  }
  md << absl::StrFormat("\nredis-benchmark -t set -n %d -P %d -d 100 -r 1000000 -c 50 against one Redis 7 primary, "
                        "FLUSHALLed before each phase.\n",
                        requests, pipeline);
  primary.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return absl::OkStatus();
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) {
  CLI::App app{"ferry vs a Redis replica: the primary's throughput and the replica's CPU per GB"};
  int requests = 2000000, pipeline = 16, commit_delay_ms = 2;
  std::string out = "bench/results";
  app.add_option("--requests", requests, "redis-benchmark -n");
  app.add_option("--pipeline", pipeline, "redis-benchmark -P");
  app.add_option("--commit-delay-ms", commit_delay_ms, "ferry's commit_delay in the last row")->check(CLI::Range(1, 1000));
  app.add_option("--out", out, "where redis.md and redis.csv go");
  CLI11_PARSE(app, argc, argv);
  absl::Status st = ferry::bench::Main(requests, pipeline, commit_delay_ms, out);
  if (!st.ok()) {
    std::fprintf(stderr, "ferry_bench_redis: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
