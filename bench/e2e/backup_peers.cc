// End-to-end backup benchmark against pgBackRest, side by side in one run on one PostgreSQL 15
// primary: a full backup by each of the same state, then --pgbench-seconds of pgbench, then an
// incremental by each of that same state. pgBackRest runs as Debian packages it (2.45) with
// compress-type=zst, compress-level=1, process-max=2, start-fast; ferry with its defaults (a
// "full" and an "incremental" snapshot of the same store, deduplicated by chunk). Reports per
// backup: wall time, CPU (ferry: its backup code in this process; pgBackRest: its processes,
// from wait4), and what each stored for it. Measures; never pass/fail.
//
//   build/bench/ferry_bench_backup [--scale 50] [--pgbench-seconds 30] [--out bench/results]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backup/pg_backup.h"
#include "bench/e2e/harness.h"
#include "local/local_postgres.h"
#include "local/server_user.h"
#include "pipeline/check.h"
#include "storage/durable_file.h"

namespace ferry::bench {
namespace {

using local::LocalPostgres;

constexpr char kPgBackRest[] = "/usr/bin/pgbackrest";

struct Measured {
  std::string tool;
  std::string kind;  // full | incremental
  double seconds = 0;
  double cpu_s = 0;
  uint64_t stored = 0;  // bytes its repository grew by
};

// ferry's backup in this process; the service's streaming thread adds its share to the CPU
// measured, as ferry's own process would carry it.
absl::StatusOr<Measured> FerryBackup(const std::string& archive, const config::SourceConfig& sc,
                                     const std::string& kind) {
  const std::string snapshots = archive + "/streams/" + sc.name + "/snapshots";  // Archive::SnapshotDir
  const uint64_t before = DiskBytes(snapshots);
  const double cpu0 = SelfCpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  FERRY_RETURN_IF_ERROR(backup::TakePostgresBackup(archive, sc, kind, nullptr, nullptr).status());
  Measured m{"ferry", kind};
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.cpu_s = SelfCpuSeconds() - cpu0;
  m.stored = DiskBytes(snapshots) - before;
  return m;
}

// pgbackrest as the postgres user (it refuses to run as root); `runuser` waits for it, so
// wait4's rusage covers it and the processes it starts (process-max).
absl::StatusOr<Measured> PgBackRest(const std::string& dir, const std::string& conf, const std::string& repo,
                                    const std::string& command, const std::string& kind) {
  std::vector<std::string> argv = {kPgBackRest, "--config=" + conf, "--stanza=bench", command};
  if (command == "backup") argv.push_back(kind == "full" ? "--type=full" : "--type=incr");
  if (local::RunningAsRoot()) argv.insert(argv.begin(), {"/usr/sbin/runuser", "-u", local::kServerUser, "--"});
  const uint64_t before = DiskBytes(repo);
  const auto t0 = std::chrono::steady_clock::now();
  const Usage u = Reap(Spawn(argv, dir + "/pgbackrest.out"), 0);
  Measured m{"pgBackRest", kind};
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (u.status != 0) {
    return absl::InternalError(absl::StrCat("pgbackrest ", command, " exited with status ", u.status, "; see ", dir,
                                            "/pgbackrest.out"));
  }
  m.cpu_s = u.cpu_s;
  m.stored = DiskBytes(repo) - before;
  return m;
}

absl::StatusOr<std::vector<Measured>> Run(const std::string& dir, int scale, int pgbench_seconds, uint64_t* db_bytes) {
  local::LocalPostgresOptions po;
  po.base_dir = dir + "/primary";
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, LocalPostgres::Create(po));
  const std::string archive = dir + "/archive";
  const std::string repo = dir + "/pgbackrest-repo";
  const std::string conf = dir + "/pgbackrest.conf";
  std::filesystem::create_directories(repo);
  std::filesystem::create_directories(dir + "/pgbackrest-run");
  FERRY_RETURN_IF_ERROR(local::GiveToServerUser(repo));
  FERRY_RETURN_IF_ERROR(local::GiveToServerUser(dir + "/pgbackrest-run"));
  std::ofstream(conf) << "[global]\nrepo1-path=" << repo << "\nlock-path=" << dir << "/pgbackrest-run\nlog-path=" << dir
                      << "/pgbackrest-run\nlog-level-console=warn\nlog-level-file=off\ncompress-type=zst\n"
                         "compress-level=1\nprocess-max=2\nstart-fast=y\narchive-check=n\n\n[bench]\npg1-path="
                      << pg->data_dir() << "\npg1-port=" << pg->port() << "\npg1-socket-path=" << pg->socket_dir()
                      << "\npg1-user=postgres\n";
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<BenchService> service, BenchService::Start(dir, archive, pg->Conninfo()));
  std::vector<Measured> out;
  absl::Status st = [&]() -> absl::Status {
    std::printf("bench: pgbench -i -s %d...\n", scale);
    FERRY_ASSIGN_OR_RETURN(local::CommandResult init,
                           pg->RunTool({"pgbench", "-i", "-q", "-s", std::to_string(scale), "postgres"}));
    if (init.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench -i: ", init.err));
    FERRY_RETURN_IF_ERROR(pg->Query("checkpoint").status());
    FERRY_ASSIGN_OR_RETURN(std::string size, pg->Query("select pg_database_size('postgres')"));
    if (!absl::SimpleAtoi(size, db_bytes)) return absl::InternalError(absl::StrCat("pg_database_size: ", size));
    FERRY_RETURN_IF_ERROR(PgBackRest(dir, conf, repo, "stanza-create", "").status());
    for (const std::string kind : {"full", "incremental"}) {
      if (kind == "incremental") {
        std::printf("bench: pgbench -T %d...\n", pgbench_seconds);
        FERRY_ASSIGN_OR_RETURN(local::CommandResult load, pg->RunTool({"pgbench", "-c", "4", "-j", "2", "-T",
                                                                       std::to_string(pgbench_seconds), "postgres"}));
        if (load.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench: ", load.err));
      }
      FERRY_ASSIGN_OR_RETURN(Measured ferry, FerryBackup(archive, service->source(), kind));
      FERRY_ASSIGN_OR_RETURN(Measured peer, PgBackRest(dir, conf, repo, "backup", kind));
      for (const Measured& m : {ferry, peer}) {
        std::printf("bench: %s %s: %.2f s, CPU %.2f s, stored %.1f MiB\n", m.tool.c_str(), m.kind.c_str(), m.seconds,
                    m.cpu_s, static_cast<double>(m.stored) / (1 << 20));
      }
      out.push_back(ferry);
      out.push_back(peer);
    }
    return absl::OkStatus();
  }();
  const absl::Status stopped = service->Stop();
  FERRY_RETURN_IF_ERROR(st);
  FERRY_RETURN_IF_ERROR(stopped);
  return out;
}

int Main(int argc, char** argv) {
  CLI::App app{"ferry backup benchmark: ferry vs pgBackRest, full and incremental, one primary, one run"};
  int scale = 50, pgbench_seconds = 30;
  std::string out = "bench/results";
  app.add_option("--scale", scale, "pgbench scale (50: about 750 MiB)");
  app.add_option("--pgbench-seconds", pgbench_seconds, "pgbench load between the full and the incremental backups");
  app.add_option("--out", out, "directory for backup_peers.md and .csv");
  CLI11_PARSE(app, argc, argv);
  if (!std::filesystem::exists(kPgBackRest)) {
    std::fprintf(stderr, "bench: %s not found: scripts/install-deps.sh installs Debian's pgbackrest\n", kPgBackRest);
    return 1;
  }

  const std::string dir = ScratchDir("backup");
  uint64_t db_bytes = 0;
  auto measured = Run(dir, scale, pgbench_seconds, &db_bytes);
  std::filesystem::remove_all(dir);
  if (!measured.ok()) {
    std::fprintf(stderr, "bench: %s\n", std::string(measured.status().message()).c_str());
    return 1;
  }
  std::filesystem::create_directories(out);
  std::ofstream md(out + "/backup_peers.md");
  std::ofstream csv(out + "/backup_peers.csv");
  const double mib = 1 << 20;
  md << absl::StrFormat("PostgreSQL 15, a %.0f MiB database (pgbench scale %d), %d s of pgbench -c 4 before the "
                        "incremental; pgBackRest 2.45 zst level 1, process-max 2 (%u cores)\n\n",
                        static_cast<double>(db_bytes) / mib, scale, pgbench_seconds, std::thread::hardware_concurrency())
     << "| backup | tool | wall s | CPU s | stored MiB | time vs pgBackRest | CPU vs pgBackRest | stored vs pgBackRest |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|\n";
  csv << "backup,tool,seconds,cpu_s,stored_bytes\n";
  for (size_t i = 0; i + 1 < measured->size(); i += 2) {
    const Measured& peer = (*measured)[i + 1];
    for (const Measured& m : {(*measured)[i], peer}) {
      md << absl::StrFormat("| %s | %s | %.2f | %.2f | %.1f | %.2fx | %.2fx | %.2fx |\n", m.kind, m.tool, m.seconds, m.cpu_s,
                            static_cast<double>(m.stored) / mib, m.seconds / std::max(peer.seconds, 1e-9),
                            m.cpu_s / std::max(peer.cpu_s, 1e-9),
                            static_cast<double>(m.stored) / static_cast<double>(std::max<uint64_t>(peer.stored, 1)));
      csv << absl::StrFormat("%s,%s,%.3f,%.3f,%llu\n", m.kind, m.tool, m.seconds, m.cpu_s,
                             static_cast<unsigned long long>(m.stored));
    }
  }
  md.close();
  std::printf("\n%s", storage::ReadWholeFile(out + "/backup_peers.md").value_or("").c_str());
  return 0;
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) { return ferry::bench::Main(argc, argv); }
