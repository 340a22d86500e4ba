// End-to-end backup benchmark: a PostgreSQL 17+ database of --scale (pgbench; 68 is about
// 1 GiB), a full backup, then --changed-percent of pgbench_accounts updated, then two backups
// of that same state in one run: a block-level incremental (UPLOAD_MANIFEST + BASE_BACKUP
// INCREMENTAL, rebuilt whole by ferry) and a whole one (deduplicated in store, but the server
// reads and sends everything). Reports per backup: wall time, bytes the server's backup
// process read (its /proc rchar), bytes it sent, ferry's CPU. Starts its own server and
// ferry on loopback; writes incremental_backup.md and .csv to --out. Measures; never pass/fail.
//
//   build/bench/ferry_bench_incremental [--scale 68] [--changed-percent 5] [--major 17] [--out bench/results]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/resource.h>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backup/pg_backup.h"
#include "bench/e2e/harness.h"
#include "local/local_postgres.h"
#include "pipeline/check.h"
#include "storage/durable_file.h"

namespace ferry::bench {
namespace {

using local::LocalPostgres;

struct Measured {
  std::string kind;
  double seconds = 0;
  double cpu_s = 0;          // this process's (ferry's backup code) user + system
  uint64_t server_read = 0;  // rchar of the server's backup process
  uint64_t sent = 0;         // file bytes received from the server
};

// The rchar of /proc/<pid>/io (bytes the process read through read(2) and friends).
uint64_t ReadChars(int pid) {
  std::ifstream io(absl::StrCat("/proc/", pid, "/io"));
  for (std::string line; std::getline(io, line);) {
    uint64_t v = 0;
    if (line.rfind("rchar: ", 0) == 0 && absl::SimpleAtoi(line.substr(7), &v)) return v;
  }
  return 0;
}

// One backup of `snapshot_class`, timed, with the server's backup walsender watched.
absl::StatusOr<Measured> Backup(const LocalPostgres& pg, const std::string& archive, const config::SourceConfig& sc,
                                const std::string& snapshot_class) {
  std::atomic<bool> done{false};
  uint64_t server_read = 0;
  std::thread watch([&] {
    int pid = 0;
    while (!done) {
      if (pid == 0) {
        auto p = pg.Query("select pid from pg_stat_activity where application_name = 'ferry_main_backup'");
        if (p.ok() && !p->empty()) (void)absl::SimpleAtoi(*p, &pid);
      }
      if (pid != 0) server_read = std::max(server_read, ReadChars(pid));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const double cpu0 = SelfCpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  auto outcome = backup::TakePostgresBackup(archive, sc, snapshot_class, nullptr, nullptr);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = SelfCpuSeconds() - cpu0;
  done = true;
  watch.join();
  FERRY_RETURN_IF_ERROR(outcome.status());
  Measured m;
  m.kind = outcome->manifest.Get("increment_of").empty() ? "whole" : "block-incremental";
  m.seconds = seconds;
  m.cpu_s = cpu;
  m.server_read = server_read;
  (void)absl::SimpleAtoi(outcome->manifest.Get("received_bytes"), &m.sent);
  std::printf("bench: %s backup %s: %.2f s, server read %.1f MiB, sent %.1f MiB, ferry CPU %.2f s\n", m.kind.c_str(),
              outcome->manifest.id.c_str(), m.seconds, static_cast<double>(m.server_read) / (1 << 20),
              static_cast<double>(m.sent) / (1 << 20), m.cpu_s);
  return m;
}

absl::StatusOr<std::vector<Measured>> Run(const std::string& dir, int major, int scale, int changed_percent,
                                          uint64_t* db_bytes) {
  local::LocalPostgresOptions po;
  po.base_dir = dir + "/primary";
  po.major = major;
  po.settings = {"summarize_wal = on"};
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, LocalPostgres::Create(po));
  const std::string archive = dir + "/archive";
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<BenchService> service, BenchService::Start(dir, archive, pg->Conninfo()));
  std::vector<Measured> out;
  absl::Status st = [&]() -> absl::Status {
    std::printf("bench: pgbench -i -s %d on PostgreSQL %d...\n", scale, major);
    FERRY_ASSIGN_OR_RETURN(local::CommandResult init,
                           pg->RunTool({"pgbench", "-h", "127.0.0.1", "-p", std::to_string(pg->port()), "-U",
                                        "postgres", "-i", "-q", "-s", std::to_string(scale), "postgres"}));
    if (init.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench -i: ", init.err));
    FERRY_RETURN_IF_ERROR(pg->Query("checkpoint").status());
    FERRY_ASSIGN_OR_RETURN(std::string size, pg->Query("select pg_database_size('postgres')"));
    (void)absl::SimpleAtoi(size, db_bytes);
    FERRY_ASSIGN_OR_RETURN(Measured first, Backup(*pg, archive, service->source(), "full"));
    // The first rows of pgbench_accounts, in the table's order: about that share of its blocks
    // (old versions marked, new ones appended) and of its index.
    FERRY_RETURN_IF_ERROR(pg->Query(absl::StrCat("update pgbench_accounts set abalance = abalance + 1 where aid <= ",
                                                 int64_t{scale} * 100000 * changed_percent / 100))
                              .status());
    FERRY_RETURN_IF_ERROR(pg->Query("checkpoint").status());
    FERRY_ASSIGN_OR_RETURN(Measured incremental, Backup(*pg, archive, service->source(), "incremental"));
    // The same state, whole: what every backup cost the server before 17.
    FERRY_ASSIGN_OR_RETURN(Measured whole, Backup(*pg, archive, service->source(), "full"));
    out = {incremental, whole};
    return absl::OkStatus();
  }();
  const absl::Status stopped = service->Stop();
  FERRY_RETURN_IF_ERROR(st);
  FERRY_RETURN_IF_ERROR(stopped);
  return out;
}

int Main(int argc, char** argv) {
  CLI::App app{"ferry backup benchmark: PostgreSQL 17+ block-level incremental vs a whole backup of the same state"};
  int scale = 68, changed = 5, major = 17;
  std::string out = "bench/results";
  app.add_option("--scale", scale, "pgbench scale (68: about 1 GiB)");
  app.add_option("--changed-percent", changed, "share of pgbench_accounts rows updated between the backups");
  app.add_option("--major", major, "PostgreSQL major (17 or later)")->check(CLI::Range(17, 99));
  app.add_option("--out", out, "directory for incremental_backup.md and .csv");
  CLI11_PARSE(app, argc, argv);

  const std::string dir = ScratchDir("incremental");
  uint64_t db_bytes = 0;
  auto measured = Run(dir, major, scale, changed, &db_bytes);
  std::filesystem::remove_all(dir);
  if (!measured.ok()) {
    std::fprintf(stderr, "bench: %s\n", std::string(measured.status().message()).c_str());
    return 1;
  }
  const Measured& inc = (*measured)[0];
  const Measured& whole = (*measured)[1];
  std::filesystem::create_directories(out);
  std::ofstream md(out + "/incremental_backup.md");
  std::ofstream csv(out + "/incremental_backup.csv");
  const double mib = 1 << 20;
  md << absl::StrFormat("PostgreSQL %d, a %.0f MiB database, %d%% of pgbench_accounts updated since the last backup "
                        "(%u cores)\n\n",
                        major, static_cast<double>(db_bytes) / mib, changed, std::thread::hardware_concurrency())
     << "| backup of the same state | wall s | server read MiB | server sent MiB | ferry CPU s |\n"
        "|---|---:|---:|---:|---:|\n";
  csv << "backup,seconds,server_read_bytes,server_sent_bytes,ferry_cpu_s\n";
  for (const Measured& m : {inc, whole}) {
    md << absl::StrFormat("| %s | %.2f | %.1f | %.1f | %.2f |\n", m.kind, m.seconds, m.server_read / mib, m.sent / mib,
                          m.cpu_s);
    csv << absl::StrFormat("%s,%.3f,%llu,%llu,%.3f\n", m.kind, m.seconds, static_cast<unsigned long long>(m.server_read),
                           static_cast<unsigned long long>(m.sent), m.cpu_s);
  }
  md << absl::StrFormat("| incremental / whole | %.2fx | %.3fx | %.3fx | %.2fx |\n", inc.seconds / whole.seconds,
                        static_cast<double>(inc.server_read) / static_cast<double>(std::max<uint64_t>(whole.server_read, 1)),
                        static_cast<double>(inc.sent) / static_cast<double>(std::max<uint64_t>(whole.sent, 1)),
                        inc.cpu_s / std::max(whole.cpu_s, 1e-9));
  md.close();
  std::printf("\n%s", storage::ReadWholeFile(out + "/incremental_backup.md").value_or("").c_str());
  return 0;
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) { return ferry::bench::Main(argc, argv); }
