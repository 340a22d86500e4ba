// End-to-end logical benchmark: change events per second, ferry (pgoutput -> archive -> Kafka,
// librdkafka's mock cluster, ack = "local+kafka") against pg_recvlogical with test_decoding
// writing to a file, on the same WAL in one run. Measures only (never pass/fail).
//
// Kafka is `ferry kafka-mock` in a process of its own. Both slots exist before the load; the load runs with neither consumer attached; then each
// consumer starts in turn and is timed until its slot has confirmed the load's end. So both
// decode the same transactions, and the time is the consumer's catch-up throughput. ferry's
// CPU (wait4) also covers its physical WAL stream of the same load.
//
// Writes logical.md and logical.csv to --out.
//
//   build/bench/ferry_bench_logical [--scale 2] [--seconds 10] [--clients 4] [--out bench/results]
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/e2e/harness.h"
#include "local/local_postgres.h"
#include "local/process.h"
#include "pipeline/check.h"

namespace ferry::bench {
namespace {

using local::LocalPostgres;

struct Row {
  std::string consumer;
  uint64_t events = 0;
  double seconds = 0;
  double cpu_s = 0;
  double max_rss_mib = 0;
  double events_per_s() const { return seconds > 0 ? static_cast<double>(events) / seconds : 0; }
};

// Waits until `slot` has confirmed `end`; returns the seconds since `t0`.
absl::StatusOr<double> WaitConfirmed(const LocalPostgres& pg, const std::string& slot, pipeline::Lsn end,
                                     std::chrono::steady_clock::time_point t0) {
  const std::string sql = absl::StrCat("select coalesce(confirmed_flush_lsn, '0/0') from pg_replication_slots ",
                                       "where slot_name = '", slot, "'");
  for (int i = 0; i < 20 * 600; ++i) {
    auto at = QueryLsn(pg, sql);  // no row (yet): the slot is still being created
    if (at.ok() && *at >= end) return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("slot ", slot, " did not reach ", end.ToString(), " in 10 min"));
}

// The rows on stdout, and as logical.md and logical.csv in out_dir.
void WriteTables(const std::vector<Row>& rows, const std::string& out_dir, int scale, int clients, int seconds) {
  for (const Row& r : rows) {
    std::printf("bench: %-48s %9llu events  %7.2f s  %9.0f events/s  CPU %.2f s  RSS %.0f MiB\n", r.consumer.c_str(),
                static_cast<unsigned long long>(r.events), r.seconds, r.events_per_s(), r.cpu_s, r.max_rss_mib);
  }

  std::filesystem::create_directories(out_dir);
  std::ofstream csv(out_dir + "/logical.csv");
  csv << "consumer,events,seconds,events_per_s,cpu_s,max_rss_mib\n";
  std::ofstream md(out_dir + "/logical.md");
  md << "| consumer | events | seconds | events/s | vs pg_recvlogical | CPU s | peak RSS MiB |\n|---|---|---|---|---|---|---|\n";
  for (const Row& r : rows) {
    csv << absl::StrFormat("\"%s\",%d,%.3f,%.0f,%.3f,%.1f\n", r.consumer, r.events, r.seconds, r.events_per_s(), r.cpu_s,
                           r.max_rss_mib);
    md << absl::StrFormat("| %s | %d | %.2f | %.0f | %.2fx | %.2f | %.0f |\n", r.consumer, r.events, r.seconds,
                          r.events_per_s(), r.events_per_s() / std::max(1.0, rows[0].events_per_s()), r.cpu_s,
                          r.max_rss_mib);
  }
  md << absl::StrFormat("\npgbench -i -s %d, then -c %d -j 2 for %d s, consumers detached; each then catches up alone. "
                        "Equal event counts mean both saw the same changes.\n",
                        scale, clients, seconds);
}

absl::Status Main(int scale, int seconds, int clients, const std::string& out_dir) {
  FERRY_ASSIGN_OR_RETURN(std::string dir, local::MakeTempDir("ferry-bench-logical"));
  local::LocalPostgresOptions po;
  po.base_dir = dir + "/primary";
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, LocalPostgres::Create(po));
  const std::string archive = dir + "/archive";
  const std::string config = dir + "/ferry.toml";
  // Kafka in a process of its own, as it is in production: the mock broker keeps every
  // message in memory, which is not ferry's to count.
  pid_t kafka = 0;
  FERRY_ASSIGN_OR_RETURN(const std::string bootstrap, StartKafkaMock(FERRY_BINARY, dir + "/kafka.log", &kafka));
  std::ofstream(config) << "drill_every = \"0s\"\n[archive]\npath = \"" << archive << "\"\n\n[kafka]\nbrokers = \""
                        << bootstrap << "\"\n\n"
                        << "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"" << pg->Conninfo()
                        << "\"\nscheduled_backups = false\nlogical_slot = \"ferry_main_cdc\"\nack = \"local+kafka\"\n";
  const std::vector<std::string> ferry = {FERRY_BINARY, "run", "--config", config};

  // Both slots, before any load: ferry creates its own (with an empty initial snapshot).
  FERRY_RETURN_IF_ERROR(pg->Query("select pg_create_logical_replication_slot('peer', 'test_decoding')").status());
  pid_t pid = Spawn(ferry, dir + "/ferry.log");
  FERRY_ASSIGN_OR_RETURN(pipeline::Lsn now, QueryLsn(*pg, "select pg_current_wal_lsn()"));
  FERRY_RETURN_IF_ERROR(WaitConfirmed(*pg, "ferry_main_cdc", now, std::chrono::steady_clock::now()).status());
  Reap(pid, SIGTERM);

  std::printf("bench: load (pgbench -i -s %d, then -c %d for %d s) with no consumer attached\n", scale, clients, seconds);
  FERRY_ASSIGN_OR_RETURN(local::CommandResult init, pg->RunTool({"pgbench", "-i", "-s", absl::StrCat(scale), "postgres"}));
  if (init.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench -i: ", init.err));
  FERRY_ASSIGN_OR_RETURN(local::CommandResult load,
                         pg->RunTool({"pgbench", "-c", absl::StrCat(clients), "-j", "2", "-T", absl::StrCat(seconds),
                                      "postgres"}));
  if (load.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench: ", load.err));
  FERRY_ASSIGN_OR_RETURN(pipeline::Lsn end, QueryLsn(*pg, "select pg_current_wal_lsn()"));

  std::vector<Row> rows;
  {
    Row r{"pg_recvlogical (test_decoding, to a file)"};
    const std::string file = dir + "/recvlogical.txt";
    const auto t0 = std::chrono::steady_clock::now();
    pid = Spawn({"/usr/lib/postgresql/15/bin/pg_recvlogical", "-d", pg->Conninfo(), "-S", "peer", "--start", "-E",
                 end.ToString(), "-f", file, "--no-loop"},
                dir + "/recvlogical.log");
    const Usage u = Reap(pid, 0);  // it stops by itself at the end position
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.cpu_s = u.cpu_s;
    r.max_rss_mib = u.max_rss_mib;
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) r.events += absl::StartsWith(line, "table ") ? 1 : 0;
    rows.push_back(r);
  }
  {
    Row r{"ferry (pgoutput, archived, Debezium to Kafka)"};
    const auto t0 = std::chrono::steady_clock::now();
    pid = Spawn(ferry, dir + "/ferry.log");
    FERRY_ASSIGN_OR_RETURN(r.seconds, WaitConfirmed(*pg, "ferry_main_cdc", end, t0));
    const Usage u = Reap(pid, SIGTERM);
    r.cpu_s = u.cpu_s;
    r.max_rss_mib = u.max_rss_mib;
    FERRY_ASSIGN_OR_RETURN(local::CommandResult changes,
                           local::RunCommand({FERRY_BINARY, "changes", "--archive", archive, "--source", "main"}));
    for (char c : changes.out) r.events += c == '\n' ? 1 : 0;
    rows.push_back(r);
  }
  WriteTables(rows, out_dir, scale, clients, seconds);
  Reap(kafka, SIGTERM);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return absl::OkStatus();
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) {
  CLI::App app{"ferry vs pg_recvlogical: change events per second"};
  int scale = 2, seconds = 10, clients = 4;
  std::string out = "bench/results";
  app.add_option("--scale", scale, "pgbench -i scale");
  app.add_option("--seconds", seconds, "pgbench run time");
  app.add_option("--clients", clients, "pgbench clients");
  app.add_option("--out", out, "where logical.md and logical.csv go");
  CLI11_PARSE(app, argc, argv);
  absl::Status st = ferry::bench::Main(scale, seconds, clients, out);
  if (!st.ok()) {
    std::fprintf(stderr, "ferry_bench_logical: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
