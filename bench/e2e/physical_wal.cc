// End-to-end physical WAL benchmark: ferry against pg_receivewal, side by side in one run, on
// the same PostgreSQL 15 primary under the same pgbench load. Measures only (never pass/fail).
//
//  * synchronous standby: pgbench TPS with no standby, with ferry in synchronous_standby_names,
//    with `pg_receivewal --synchronous` there, and with ferry on its other archive writer;
//  * asynchronous capture: for ferry (its default commit_delay "auto", which is 10 ms for an
//    asynchronous standby, and again with --commit-delay, default "0s": a group commit per
//    flush the primary sends), pg_receivewal and `pg_receivewal --compress=lz4`, CPU
//    seconds per GB of WAL and peak RSS of the capturing process (from wait4's rusage), bytes
//    it stored per GB of WAL, and how far its flush position trails the primary when the load
//    stops, and sampled every 250 ms while the load runs.
//
// Writes physical.md, physical.csv and physical_lag.csv (the samples) to --out; physical_bulk.*
// with --load bulk.
//
// With --load bulk the load is 1,000-row inserts instead of pgbench's TPC-B-like script: WAL as
// fast as the primary makes it.
//
//   build/bench/ferry_bench_physical [--load pgbench|bulk] [--seconds 20] [--clients 4] [--scale 10]
//                                    [--commit-delay 0s] [--rows all|sync] [--out bench/results]
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/e2e/harness.h"
#include "local/local_postgres.h"
#include "pipeline/check.h"
#include "pipeline/position.h"
#include "storage/durable_file.h"

namespace ferry::bench {
namespace {

using local::LocalPostgres;

constexpr char kPgBin[] = "/usr/lib/postgresql/15/bin/";

// A process that captures WAL: how to start it, how it shows in pg_stat_replication, where
// it stores what it captures, and the signal that stops it cleanly.
struct Capturer {
  std::string name;
  std::string app_name;
  std::vector<std::string> argv;
  std::string store_dir;
  std::string slot;
  int stop_signal = SIGTERM;
};

struct Row {
  std::string capture;  // "none" for the baseline
  bool sync = false;
  double tps = 0, latency_ms = 0;
  double wal_gb = 0;       // WAL the primary wrote during the load
  double cpu_s = 0;        // capturer's user + system CPU
  double max_rss_mib = 0;
  double stored_gb = 0;    // what it holds on disk at the end
  double lag_bytes = 0;    // primary's WAL end minus the capturer's flush position, as the load ends
  std::vector<std::pair<double, double>> lag_series;  // (seconds into the load, lag bytes)
};

double Field(const std::string& out, const std::string& key) {
  const size_t at = out.find(key);
  return at == std::string::npos ? 0 : std::strtod(out.c_str() + at + key.size(), nullptr);
}

// The load: pgbench's TPC-B-like script, or with `bulk` a script inserting 1,000 rows of 64 hex
// characters per transaction, which makes WAL as fast as the primary can (the capturer's
// per-byte costs, where TPC-B's small commits show its per-commit ones).
struct Load {
  bool bulk = false;
  int seconds = 20;
  int clients = 4;
  std::string script;  // bulk: the pgbench script file
};

absl::StatusOr<Row> RunOne(const LocalPostgres& pg, const std::optional<Capturer>& c, bool sync, const Load& load,
                           const std::string& dir) {
  Row row;
  row.capture = c.has_value() ? c->name : "none";
  row.sync = sync;
  FERRY_RETURN_IF_ERROR(pg.Query(absl::StrCat("alter system set synchronous_standby_names = '",
                                              sync && c.has_value() ? c->app_name : "", "'"))
                            .status());
  FERRY_RETURN_IF_ERROR(pg.Query("select pg_reload_conf()").status());
  pid_t pid = -1;
  if (c.has_value()) {
    std::filesystem::create_directories(c->store_dir);
    pid = Spawn(c->argv, dir + "/" + c->app_name + ".log");
    // Streaming (and, for a synchronous standby, chosen as the synchronous one).
    bool ready = false;
    for (int i = 0; i < 300 && !ready; ++i) {
      auto state = pg.Query(absl::StrCat("select state || '/' || sync_state from pg_stat_replication where application_name = '",
                                         c->app_name, "'"));
      ready = state.ok() && (*state == (sync ? "streaming/sync" : "streaming/async"));
      if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!ready) return absl::DeadlineExceededError(absl::StrCat(c->name, " did not start streaming (log in ", dir, ")"));
    // Caught up: it has received all WAL up to now (its first segment from the start), so
    // that the load's CPU and bytes below are the load's own.
    FERRY_ASSIGN_OR_RETURN(const pipeline::Lsn now, QueryLsn(pg, "select pg_current_wal_lsn()"));
    bool caught_up = false;
    for (int i = 0; i < 300 && !caught_up; ++i) {
      auto written = QueryLsn(pg, absl::StrCat("select write_lsn from pg_stat_replication where application_name = '",
                                               c->app_name, "'"));
      caught_up = written.ok() && *written >= now;
      std::this_thread::sleep_for(std::chrono::milliseconds(caught_up ? 500 : 100));  // then lets it sync
    }
    if (!caught_up) return absl::DeadlineExceededError(absl::StrCat(c->name, " did not catch up (log in ", dir, ")"));
  }
  // Each row inserts into an empty table; truncated before anything is counted.
  if (load.bulk) FERRY_RETURN_IF_ERROR(pg.Query("truncate ferry_bench_bulk").status());
  // CPU and bytes stored count from here: the load's WAL, not start-up and the catch-up from
  // the start of the slot's first segment.
  const double cpu_before = pid > 0 ? ProcessCpuSeconds(pid) : 0;
  const uint64_t stored_before = c.has_value() ? DiskBytes(c->store_dir) : 0;
  FERRY_ASSIGN_OR_RETURN(pipeline::Lsn start, QueryLsn(pg, "select pg_current_wal_lsn()"));
  absl::StatusOr<local::CommandResult> ran = absl::UnknownError("pgbench did not run");
  std::atomic<bool> done{false};
  std::thread pgbench([&] {
    std::vector<std::string> argv = {"pgbench", "-c", absl::StrCat(load.clients), "-j", "2", "-T",
                                     absl::StrCat(load.seconds)};
    if (load.bulk) argv.insert(argv.end(), {"-n", "-f", load.script});
    argv.push_back("postgres");
    ran = pg.RunTool(argv);
    done = true;
  });
  // The capturer's lag while the load runs (a sample costs the primary one small query).
  const auto t0 = std::chrono::steady_clock::now();
  // The baseline runs the same query (finding no row): every row carries the same extra load.
  while (!done) {
    auto lag = pg.Query(absl::StrCat("select pg_current_wal_lsn() - flush_lsn from pg_stat_replication where "
                                     "application_name = '", c.has_value() ? c->app_name : "", "'"));
    if (c.has_value() && lag.ok() && !lag->empty()) {
      row.lag_series.emplace_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                                  std::strtod(lag->c_str(), nullptr));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  pgbench.join();
  FERRY_RETURN_IF_ERROR(ran.status());
  const local::CommandResult& bench = *ran;
  if (bench.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench: ", bench.err));
  FERRY_ASSIGN_OR_RETURN(pipeline::Lsn end, QueryLsn(pg, "select pg_current_wal_lsn()"));
  row.tps = Field(bench.out, "tps = ");
  row.latency_ms = Field(bench.out, "latency average = ");
  row.wal_gb = static_cast<double>(end.value() - start.value()) / 1e9;
  if (c.has_value()) {
    auto flushed = QueryLsn(pg, absl::StrCat("select flush_lsn from pg_stat_replication where application_name = '",
                                        c->app_name, "'"));
    if (flushed.ok()) row.lag_bytes = end.value() > flushed->value() ? static_cast<double>(end.value() - flushed->value()) : 0;
    const Usage used = Reap(pid, c->stop_signal);
    row.cpu_s = used.cpu_s - cpu_before;
    row.max_rss_mib = used.max_rss_mib;
    const uint64_t stored = DiskBytes(c->store_dir);
    row.stored_gb = static_cast<double>(stored > stored_before ? stored - stored_before : 0) / 1e9;
    FERRY_RETURN_IF_ERROR(pg.Query(absl::StrCat("select pg_drop_replication_slot('", c->slot, "')")).status());
  }
  std::printf("bench: %-32s %-5s %7.0f TPS  %.3f GB WAL  CPU %.2f s  RSS %.0f MiB  stored %.3f GB  lag %.0f B\n",
              row.capture.c_str(), sync ? "sync" : "async", row.tps, row.wal_gb, row.cpu_s, row.max_rss_mib,
              row.stored_gb, row.lag_bytes);
  return row;
}

// `commit_delay` empty: the default ("auto"); else the source's commit_delay, e.g. "0s".
// `verify_mb_per_s` below 0: the default read-back rate ([archive] verify_mb_per_s).
Capturer Ferry(const LocalPostgres& pg, const std::string& dir, const std::string& ferry, const std::string& writer,
               int n, const std::string& commit_delay = "", int verify_mb_per_s = -1) {
  Capturer c;
  c.name = writer == "posix" ? "ferry" : absl::StrCat("ferry (", writer, " writer)");
  if (!commit_delay.empty()) absl::StrAppend(&c.name, ", commit_delay ", commit_delay);
  if (verify_mb_per_s >= 0) absl::StrAppend(&c.name, ", verify_mb_per_s ", verify_mb_per_s);
  c.app_name = "ferry_main";
  c.slot = "ferry_main";
  c.store_dir = absl::StrCat(dir, "/ferry-", n, "/archive");
  const std::string config = absl::StrCat(dir, "/ferry-", n, ".toml");
  std::filesystem::create_directories(c.store_dir);
  std::ofstream(config) << "drill_every = \"0s\"\n[archive]\npath = \"" << c.store_dir << "\"\nwriter = \"" << writer
                        << "\"\n"
                        << (verify_mb_per_s >= 0 ? absl::StrCat("verify_mb_per_s = ", verify_mb_per_s, "\n") : "") << "\n"
                        << "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"" << pg.Conninfo()
                        << "\"\nscheduled_backups = false\nstatus_interval_ms = 1000\n"
                        << (commit_delay.empty() ? "" : absl::StrCat("commit_delay = \"", commit_delay, "\"\n"));
  c.argv = {ferry, "run", "--config", config};
  return c;
}

Capturer Receivewal(const LocalPostgres& pg, const std::string& dir, const std::string& extra, int n) {
  Capturer c;
  c.name = extra.empty() ? "pg_receivewal" : absl::StrCat("pg_receivewal ", extra);
  c.app_name = "pg_receivewal";
  c.slot = absl::StrCat("bench_", n);
  c.store_dir = absl::StrCat(dir, "/receivewal-", n);
  c.stop_signal = SIGINT;  // its documented clean stop
  c.argv = {absl::StrCat(kPgBin, "pg_receivewal"), "-d", pg.Conninfo(), "-D", c.store_dir, "-S", c.slot, "--no-loop",
            "--status-interval=1"};
  if (!extra.empty()) c.argv.push_back(extra);
  return c;
}

int Main(int argc, char** argv) {
  CLI::App app{"ferry physical WAL benchmark: ferry vs pg_receivewal on one primary, one run"};
  Load load;
  int scale = 10;
  std::string load_kind = "pgbench";
  std::string out = "bench/results";
  std::string ferry = FERRY_BINARY;
  std::string writer = "posix";
  app.add_option("--writer", writer, "ferry's archive writer: posix (the default) or io_uring");
  std::string commit_delay = "0s";
  app.add_option("--commit-delay", commit_delay, "commit_delay of the second asynchronous ferry row (the first: auto)");
  app.add_option("--seconds", load.seconds, "pgbench duration per measurement");
  app.add_option("--clients", load.clients, "pgbench clients (-j 2)");
  app.add_option("--load", load_kind, "pgbench: its TPC-B-like script; bulk: 1,000-row inserts, WAL as fast as it comes")
      ->check(CLI::IsMember({"pgbench", "bulk"}));
  app.add_option("--scale", scale, "pgbench scale");
  app.add_option("--out", out, "directory for physical.md and physical.csv");
  app.add_option("--ferry", ferry, "ferry binary");
  std::string rows_kind = "all";
  app.add_option("--rows", rows_kind, "all, or sync: only the synchronous-standby rows (for iterating on the commit path)")
      ->check(CLI::IsMember({"all", "sync"}));
  CLI11_PARSE(app, argc, argv);

  const std::string dir = ScratchDir("physical");
  std::vector<Row> rows;
  absl::Status st = [&]() -> absl::Status {
    local::LocalPostgresOptions po;
    po.base_dir = dir + "/primary";
    FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, LocalPostgres::Create(po));
    FERRY_ASSIGN_OR_RETURN(local::CommandResult init, pg->RunTool({"pgbench", "-i", "-s", absl::StrCat(scale), "-q", "postgres"}));
    if (init.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench -i: ", init.err));
    load.bulk = load_kind == "bulk";
    if (load.bulk) {
      FERRY_RETURN_IF_ERROR(pg->Query("create table ferry_bench_bulk (id int, payload text)").status());
      load.script = dir + "/bulk.sql";
      std::ofstream(load.script) << "insert into ferry_bench_bulk select g, md5(g::text) || md5((g + 1)::text) "
                                    "from generate_series(1, 1000) g;\n";
    }
    int n = 0;
    auto run = [&](const std::optional<Capturer>& c, bool sync) -> absl::Status {
      if (c.has_value() && c->app_name == "pg_receivewal") {
        FERRY_ASSIGN_OR_RETURN(local::CommandResult slot,
                               local::RunCommand({absl::StrCat(kPgBin, "pg_receivewal"), "-d", pg->Conninfo(), "-S",
                                                  c->slot, "--create-slot"}));
        if (slot.exit_code != 0) return absl::InternalError(absl::StrCat("pg_receivewal --create-slot: ", slot.err));
      }
      FERRY_ASSIGN_OR_RETURN(Row r, RunOne(*pg, c, sync, load, dir));
      rows.push_back(r);
      return absl::OkStatus();
    };
    // A warm-up run first, not reported: right after pgbench -i the primary is slower (its
    // first checkpoint, autovacuum), which would flatter every row measured against it.
    FERRY_RETURN_IF_ERROR(RunOne(*pg, std::nullopt, false, load, dir).status());
    FERRY_RETURN_IF_ERROR(run(std::nullopt, false));
    FERRY_RETURN_IF_ERROR(run(Ferry(*pg, dir, ferry, writer, ++n), true));
    FERRY_RETURN_IF_ERROR(run(Receivewal(*pg, dir, "--synchronous", ++n), true));
    // The other writer as the synchronous standby too: the commit path is where they differ.
    const std::string other = writer == "posix" ? "io_uring" : "posix";
    FERRY_RETURN_IF_ERROR(run(Ferry(*pg, dir, ferry, other, ++n), true));
    if (rows_kind == "sync") return pg->Stop();
    FERRY_RETURN_IF_ERROR(run(Ferry(*pg, dir, ferry, writer, ++n), false));
    // The same without reading back what was archived: what the verifier costs.
    FERRY_RETURN_IF_ERROR(run(Ferry(*pg, dir, ferry, writer, ++n, "", 0), false));
    FERRY_RETURN_IF_ERROR(run(Ferry(*pg, dir, ferry, writer, ++n, commit_delay), false));
    FERRY_RETURN_IF_ERROR(run(Receivewal(*pg, dir, "", ++n), false));
    FERRY_RETURN_IF_ERROR(run(Receivewal(*pg, dir, "--compress=lz4", ++n), false));
    return pg->Stop();
  }();
  if (!st.ok()) {
    std::fprintf(stderr, "bench: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  std::filesystem::create_directories(out);
  const std::string name = load.bulk ? "physical_bulk" : "physical";  // the two tables side by side
  std::ofstream md(out + "/" + name + ".md");
  std::ofstream csv(out + "/" + name + ".csv");
  const double base_tps = rows[0].tps;
  md << absl::StrFormat("pgbench -c %d -j 2, %s, %d s per row, synchronous_commit = on; %u cores\n\n", load.clients,
                        load.bulk ? "1,000-row inserts (--load bulk)" : absl::StrCat("scale ", scale), load.seconds,
                        std::thread::hardware_concurrency())
     << "| capture | standby | TPS | vs no standby | latency ms | CPU s per GB WAL | peak RSS MiB | stored per GB WAL | "
        "flush lag at end |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  csv << "capture,standby,tps,tps_ratio,latency_ms,wal_gb,cpu_s,cpu_s_per_gb,max_rss_mib,stored_gb_per_gb,lag_bytes\n";
  for (const Row& r : rows) {
    const bool none = r.capture == "none";
    const double per_gb = r.wal_gb > 0 ? r.cpu_s / r.wal_gb : 0;
    const double stored = r.wal_gb > 0 ? r.stored_gb / r.wal_gb : 0;
    md << absl::StrFormat("| %s | %s | %.0f | %.2fx | %.2f | %s | %s | %s | %s |\n", r.capture,
                          none ? "-" : (r.sync ? "sync" : "async"), r.tps, r.tps / base_tps, r.latency_ms,
                          none ? "-" : absl::StrFormat("%.1f", per_gb), none ? "-" : absl::StrFormat("%.0f", r.max_rss_mib),
                          none ? "-" : absl::StrFormat("%.3f", stored),
                          none ? "-" : absl::StrFormat("%.0f KiB", r.lag_bytes / 1024));
    csv << absl::StrFormat("\"%s\",%s,%.1f,%.3f,%.3f,%.4f,%.3f,%.3f,%.1f,%.4f,%.0f\n", r.capture,
                           none ? "none" : (r.sync ? "sync" : "async"), r.tps, r.tps / base_tps, r.latency_ms, r.wal_gb,
                           r.cpu_s, per_gb, r.max_rss_mib, stored, r.lag_bytes);
  }
  std::ofstream lag_csv(out + "/" + name + "_lag.csv");
  lag_csv << "capture,standby,t_s,lag_bytes\n";
  for (const Row& r : rows) {
    for (const auto& [t, lag] : r.lag_series) {
      lag_csv << absl::StrFormat("\"%s\",%s,%.2f,%.0f\n", r.capture, r.sync ? "sync" : "async", t, lag);
    }
  }
  md << "\nCPU (during the load) and peak RSS are the capturing process's own (/proc, wait4); stored = what its "
        "directory's allocated blocks grew by during the load (pg_receivewal preallocates 16 MB segments); lag = pg_current_wal_lsn() minus its reported flush position "
        "when pgbench ends.\n";
  md.close();
  std::printf("\n%s", storage::ReadWholeFile(out + "/" + name + ".md").value_or("").c_str());
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) { return ferry::bench::Main(argc, argv); }
