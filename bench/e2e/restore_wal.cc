// End-to-end restore benchmark: PostgreSQL recovery of the same WAL, served three ways in one
// run: already in pg_wal (the floor: replay alone), through `ferry wal-fetch --prefetch 0`
// (decompression on replay's critical path), and through `ferry wal-fetch` with its default
// decompress-ahead. Starts its own PostgreSQL 15 and ferry on loopback; writes a Markdown
// table and a CSV to --out. Measures; never pass/fail.
//
//   build/bench/ferry_bench_restore [--wal-mb 1024] [--repeat 1] [--out bench/results]
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
#include "client/pg/replication_conn.h"
#include "local/local_postgres.h"
#include "pipeline/check.h"
#include "restore/pg_restore.h"
#include "restore/recover.h"
#include "restore/wal_fetch.h"
#include "storage/archive.h"
#include "storage/durable_file.h"
#include "storage/snapshot_store.h"

namespace ferry::bench {
namespace {

using local::LocalPostgres;

struct Setup {
  std::string archive;
  std::string snapshot_id;
  pipeline::Lsn start, end;  // WAL that every restore replays
};

absl::Status Pgbench(const LocalPostgres& pg, std::vector<std::string> args) {
  std::vector<std::string> argv = {"pgbench", "-h", "127.0.0.1", "-p", std::to_string(pg.port()), "-U", "postgres"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("postgres");
  FERRY_ASSIGN_OR_RETURN(local::CommandResult r, pg.RunTool(argv));
  if (r.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench: ", r.err));
  return absl::OkStatus();
}

// A primary with ferry streaming into `dir`/archive: a base backup, then pgbench until
// `wal_mb` of WAL follow it, all synced.
absl::StatusOr<Setup> Prepare(const std::string& dir, uint64_t wal_mb) {
  local::LocalPostgresOptions po;
  po.base_dir = dir + "/primary";
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, LocalPostgres::Create(po));
  Setup s;
  s.archive = dir + "/archive";
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<BenchService> service, BenchService::Start(dir, s.archive, pg->Conninfo()));
  absl::Status st = [&]() -> absl::Status {
    FERRY_RETURN_IF_ERROR(Pgbench(*pg, {"-i", "-s", "20", "-q"}));
    FERRY_ASSIGN_OR_RETURN(backup::PgBackupOutcome backup,
                           backup::TakePostgresBackup(s.archive, service->source(), "full", nullptr, nullptr));
    s.snapshot_id = backup.manifest.id;
    FERRY_ASSIGN_OR_RETURN(s.start, pipeline::Lsn::Parse(backup.manifest.Get("start_lsn")));
    std::printf("bench: backup %s; generating %llu MiB of WAL with pgbench...\n", s.snapshot_id.c_str(),
                static_cast<unsigned long long>(wal_mb));
    while (true) {
      FERRY_ASSIGN_OR_RETURN(s.end, QueryLsn(*pg, "select pg_current_wal_lsn()"));
      if (s.end.value() - s.start.value() >= (wal_mb << 20)) break;
      FERRY_RETURN_IF_ERROR(Pgbench(*pg, {"-T", "5", "-c", "4", "-j", "2"}));
    }
    for (int i = 0; i < 600; ++i) {
      auto flushed = QueryLsn(*pg, "select flush_lsn from pg_stat_replication where application_name = 'ferry_main'");
      if (flushed.ok() && flushed->value() >= s.end.value()) return absl::OkStatus();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return absl::DeadlineExceededError("ferry did not sync the WAL within 60 s");
  }();
  const absl::Status stopped = service->Stop();
  FERRY_RETURN_IF_ERROR(st);
  FERRY_RETURN_IF_ERROR(stopped);
  FERRY_RETURN_IF_ERROR(pg->Stop());
  return s;
}

enum class Mode { kPgWal, kFetchNoPrefetch, kFetchPrefetch };
const char* ModeName(Mode m) {
  switch (m) {
    case Mode::kPgWal: return "WAL already in pg_wal";
    case Mode::kFetchNoPrefetch: return "ferry wal-fetch --prefetch 0";
    case Mode::kFetchPrefetch: return "ferry wal-fetch (decompress-ahead)";
  }
  return "";
}

// Seconds from starting the server until recovery has replayed everything and promoted.
absl::StatusOr<double> TimeRecovery(const Setup& s, Mode mode, const std::string& to, const std::string& ferry) {
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(s.archive, storage::ArchiveOptions{}));
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive->SnapshotDir("main"), false));
  const storage::SnapshotManifest* snap = store->Find(s.snapshot_id);
  if (snap == nullptr) return absl::NotFoundError(absl::StrCat("snapshot ", s.snapshot_id));
  FERRY_RETURN_IF_ERROR(restore::MaterialiseSnapshot(*store, *snap, to, nullptr));
  FERRY_RETURN_IF_ERROR(restore::WriteRecoverySettings(to, ferry, s.archive, "main", ""));
  std::ofstream conf(to + "/postgresql.auto.conf", std::ios::app);  // later lines win
  if (mode == Mode::kPgWal) {
    // Every segment in pg_wal beforehand (not timed); the archive is never asked.
    FERRY_ASSIGN_OR_RETURN(uint64_t seg, restore::WalSegmentBytes(*archive, "main"));
    for (uint64_t n = s.start.value() / seg; n <= s.end.value() / seg; ++n) {
      const std::string name = client::pg::WalFileName(pipeline::TimelineId(1), n, seg);
      FERRY_RETURN_IF_ERROR(restore::FetchWalFile(*archive, "main", name, to + "/pg_wal/" + name));
    }
    conf << "restore_command = 'false'\n";
  } else if (mode == Mode::kFetchNoPrefetch) {
    conf << "restore_command = '" << ferry << " wal-fetch --archive "
         << std::filesystem::absolute(s.archive).string() << " --source main --prefetch 0 %f %p'\n";
  }
  conf.close();
  const auto t0 = std::chrono::steady_clock::now();
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, LocalPostgres::StartExisting(to));
  FERRY_RETURN_IF_ERROR(restore::WaitForRecoveryEnd(*pg, 3600));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  FERRY_ASSIGN_OR_RETURN(pipeline::Lsn reached, QueryLsn(*pg, "select pg_current_wal_lsn()"));
  if (reached.value() < s.end.value()) {
    return absl::DataLossError(absl::StrCat(ModeName(mode), " stopped at ", reached.ToString(), " before ",
                                            s.end.ToString()));
  }
  FERRY_RETURN_IF_ERROR(pg->Stop());
  std::error_code ec;
  std::filesystem::remove_all(to, ec);
  return seconds;
}

// What `ferry restore postgres --latest` spends before PostgreSQL starts: the backup's copy
// alone, the check of every WAL frame and record recovery will read alone, and the restore
// itself, which runs the two on two threads.
struct BeforeRecovery {
  double copy = 0, check = 0, restore = 0;
};

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

absl::StatusOr<BeforeRecovery> TimeBeforeRecovery(const Setup& s, const std::string& to, const std::string& ferry) {
  BeforeRecovery b;
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(s.archive, storage::ArchiveOptions{}));
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive->SnapshotDir("main"), false));
  const storage::SnapshotManifest* snap = store->Find(s.snapshot_id);
  if (snap == nullptr) return absl::NotFoundError(absl::StrCat("snapshot ", s.snapshot_id));
  std::error_code ec;
  auto t0 = std::chrono::steady_clock::now();
  FERRY_RETURN_IF_ERROR(restore::MaterialiseSnapshot(*store, *snap, to, nullptr));
  b.copy = Since(t0);
  std::filesystem::remove_all(to, ec);
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * wal, archive->Stream("main", pipeline::StreamKind::kPgWal));
  FERRY_ASSIGN_OR_RETURN(uint64_t seg, restore::WalSegmentBytes(*archive, "main"));
  FERRY_ASSIGN_OR_RETURN(storage::SourceIdentity identity, archive->GetIdentity("main"));
  uint64_t system_id = 0;
  (void)absl::SimpleAtoi(identity["system_id"], &system_id);
  FERRY_ASSIGN_OR_RETURN(restore::PgRestorePlan plan, restore::PlanPgRestore(*wal, *store, restore::PgTarget{}, seg, system_id));
  t0 = std::chrono::steady_clock::now();
  FERRY_RETURN_IF_ERROR(restore::CheckRestoreWal(*wal, plan, seg, system_id).status());
  b.check = Since(t0);
  t0 = std::chrono::steady_clock::now();
  FERRY_RETURN_IF_ERROR(restore::RestorePostgresTo(s.archive, "main", restore::PgTarget{}, to, ferry).status());
  b.restore = Since(t0);
  std::filesystem::remove_all(to, ec);
  return b;
}

int Main(int argc, char** argv) {
  CLI::App app{"ferry restore benchmark: PostgreSQL recovery from pg_wal vs ferry wal-fetch"};
  uint64_t wal_mb = 1024;
  int repeat = 1;
  std::string out = "bench/results";
  std::string ferry = FERRY_BINARY;
  app.add_option("--wal-mb", wal_mb, "WAL to generate and replay (MiB)");
  app.add_option("--repeat", repeat, "runs of each mode (the best counts)");
  app.add_option("--out", out, "directory for restore.md and restore.csv");
  app.add_option("--ferry", ferry, "ferry binary for restore_command");
  bool keep = false;
  app.add_flag("--keep", keep, "keep the scratch directory (primary, archive) for inspection");
  CLI11_PARSE(app, argc, argv);

  const std::string dir = ScratchDir("restore");
  auto setup = Prepare(dir, wal_mb);
  if (!setup.ok()) {
    std::fprintf(stderr, "bench: %s\n", std::string(setup.status().message()).c_str());
    return 1;
  }
  const double wal_mib = static_cast<double>(setup->end.value() - setup->start.value()) / (1 << 20);
  std::vector<std::pair<Mode, double>> best;
  for (Mode mode : {Mode::kPgWal, Mode::kFetchNoPrefetch, Mode::kFetchPrefetch}) {
    double b = 0;
    for (int i = 0; i < repeat; ++i) {
      auto t = TimeRecovery(*setup, mode, dir + "/restore", ferry);
      if (!t.ok()) {
        std::fprintf(stderr, "bench: %s: %s\n", ModeName(mode), std::string(t.status().message()).c_str());
        return 1;
      }
      std::printf("bench: %-36s %7.2f s\n", ModeName(mode), *t);
      if (i == 0 || *t < b) b = *t;
    }
    best.emplace_back(mode, b);
  }
  auto before = TimeBeforeRecovery(*setup, dir + "/restore", ferry);
  if (!before.ok()) {
    std::fprintf(stderr, "bench: before recovery: %s\n", std::string(before.status().message()).c_str());
    return 1;
  }
  std::filesystem::create_directories(out);
  std::ofstream md(out + "/restore.md");
  std::ofstream csv(out + "/restore.csv");
  md << absl::StrFormat("Recovery of %.0f MiB of pgbench WAL (%u cores, best of %d)\n\n", wal_mib,
                        std::thread::hardware_concurrency(), repeat)
     << "| WAL served by | recovery s | MiB/s | vs pg_wal |\n|---|---:|---:|---:|\n";
  csv << "mode,seconds,mib_per_s,ratio_vs_pg_wal\n";
  for (const auto& [mode, s] : best) {
    const double ratio = s / best[0].second;
    md << absl::StrFormat("| %s | %.2f | %.0f | %.2fx |\n", ModeName(mode), s, wal_mib / s, ratio);
    csv << absl::StrFormat("%s,%.3f,%.1f,%.3f\n", ModeName(mode), s, wal_mib / s, ratio);
  }
  md << absl::StrFormat(
      "\nBefore recovery starts (`ferry restore postgres --latest`): copying the backup alone %.2f s; "
      "checking every WAL frame and record recovery will read alone %.2f s (%.0f MiB/s of WAL); the "
      "restore, both on two threads, %.2f s (%.2fx the copy alone)\n",
      before->copy, before->check, wal_mib / before->check, before->restore, before->restore / before->copy);
  csv << absl::StrFormat("before recovery: copy,%.3f,,\nbefore recovery: check,%.3f,%.1f,\nbefore recovery: restore,%.3f,,\n",
                         before->copy, before->check, wal_mib / before->check, before->restore);
  md.close();
  std::printf("\n%s", storage::ReadWholeFile(out + "/restore.md").value_or("").c_str());
  if (keep) {
    std::printf("bench: kept %s\n", dir.c_str());
  } else {
    std::filesystem::remove_all(dir);
  }
  return 0;
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) { return ferry::bench::Main(argc, argv); }
