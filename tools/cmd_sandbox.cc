// ferry sandbox: a local PostgreSQL (as the unprivileged postgres user) and Redis, the ferry
// service as PostgreSQL's synchronous standby and Redis's replica, pgbench and
// redis-benchmark load, then ls, verify, `restore all` of both to one instant in the middle
// of the load and to the end (compared with the primaries), and a drill with its RPO/RTO
// table. Prints what a user would want to know: TPS, RPO, RTO, identical or not.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "cross_region/mirror.h"
#include "storage/durable_file.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "pipeline/check.h"
#include "pipeline/position.h"
#include "tools/backup/pg_backup.h"
#include "tools/commands.h"
#include "tools/restore/drill.h"
#include "tools/restore/pg_restore.h"
#include "tools/restore/restore_all.h"
#include "tools/sandbox/local_postgres.h"
#include "tools/sandbox/local_redis.h"
#include "tools/sandbox/pg_steps.h"
#include "tools/sandbox/process.h"
#include "tools/service/service.h"

namespace ferry::tools {
namespace {

const std::vector<std::string> kPgbenchTables = {"pgbench_accounts", "pgbench_branches",
                                                 "pgbench_tellers", "pgbench_history"};

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// "source/stream" -> the stream's verify digest (equal digests: byte-identical frames).
std::map<std::string, uint64_t> StreamDigests(const std::string& archive_path) {
  std::map<std::string, uint64_t> out;
  auto archive = storage::Archive::Open(archive_path, storage::ArchiveOptions{});
  if (!archive.ok()) return out;
  for (const std::string& src : (*archive)->Sources()) {
    for (pipeline::StreamKind kind : (*archive)->Streams(src)) {
      auto log = (*archive)->Stream(src, kind);
      std::vector<storage::Damage> damage;
      if (log.ok()) out[absl::StrCat(src, "/", pipeline::StreamKindName(kind))] = (*log)->Verify(&damage);
    }
  }
  return out;
}

absl::Status RunSandbox(const std::string& dir, int seconds) {
  std::printf("sandbox: working in %s\n", dir.c_str());
  LocalPostgresOptions po;
  po.base_dir = dir + "/primary";
  // ferry is the synchronous standby: a commit returns only once it is durable in the archive.
  po.settings = {"synchronous_standby_names = 'ferry_main'"};
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, LocalPostgres::Create(po));
  std::printf("sandbox: PostgreSQL 15 on 127.0.0.1:%d (synchronous_standby_names = 'ferry_main')\n", pg->port());

  LocalRedisOptions ro;
  ro.dir = dir + "/redis";
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalRedis> redis, LocalRedis::Start(ro));
  std::printf("sandbox: Redis on %s\n", redis->Address().c_str());

  const std::string archive = dir + "/archive";
  // The restores below run PostgreSQL (and its restore_command) as the postgres user.
  FERRY_RETURN_IF_ERROR(tools::MakeArchiveDirForServerUser(archive));
  const std::string config_text = absl::StrCat(
      "region = \"sandbox\"\n[archive]\npath = \"", archive, "\"\nwriter = \"io_uring\"\n\n",
      "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"", pg->Conninfo(), "\"\n",
      // The sandbox takes its backup itself, at a known moment, instead of on a schedule.
      "scheduled_backups = false\n",
      // Row-level change events too (pg-changes), published per table as Debezium JSON.
      "logical_slot = \"ferry_main_cdc\"\n\n",
      // Kafka: librdkafka's mock cluster inside the service; a second region mirrors it.
      "[kafka]\nbrokers = \"mock:1\"\n\n",
      "[[source]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"", redis->Address(), "\"\n");
  std::ofstream(dir + "/ferry.toml") << config_text;
  FERRY_ASSIGN_OR_RETURN(Config config, ParseConfig(config_text, dir + "/ferry.toml"));
  absl::StatusOr<std::unique_ptr<Service>> service = Service::Create(config);
  if (!service.ok() && absl::IsFailedPrecondition(service.status()) &&
      config.writer == storage::WriterKind::kIoUring) {
    std::printf("sandbox: %s; using writer = \"posix\"\n", std::string(service.status().message()).c_str());
    config.writer = storage::WriterKind::kPosix;  // io_uring blocked here: use the fallback
    service = Service::Create(config);
  }
  FERRY_RETURN_IF_ERROR(service.status());
  absl::Status service_result;
  std::thread runner([&] { service_result = (*service)->Run(); });
  auto stop_service = [&] {
    (*service)->Stop();
    if (runner.joinable()) runner.join();
  };

  const std::string mirror_archive = dir + "/mirror";
  FERRY_RETURN_IF_ERROR(tools::MakeArchiveDirForServerUser(mirror_archive));
  std::unique_ptr<cross_region::Mirror> mirror;
  std::thread mirror_thread;
  absl::Status mirror_result;
  auto stop_mirror = [&] {
    if (mirror != nullptr) mirror->Stop();
    if (mirror_thread.joinable()) mirror_thread.join();
  };
  std::string mid_sums, mid_digest;
  pipeline::UnixMicros mid_time = 0;
  absl::Status st = [&]() -> absl::Status {
    for (int i = 0; i < 300; ++i) {
      auto s = pg->Query("select sync_state from pg_stat_replication where application_name = 'ferry_main'");
      if (s.ok() && *s == "sync") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FERRY_RETURN_IF_ERROR(WaitReplicaAcked(*redis, 60));  // ferry is Redis's replica too
    std::printf("sandbox: ferry streaming into %s\n", archive.c_str());
    FERRY_ASSIGN_OR_RETURN(std::string bootstrap, storage::ReadWholeFile(archive + "/KAFKA"));
    cross_region::MirrorOptions mo;
    mo.kafka.brokers = std::string(absl::StripAsciiWhitespace(bootstrap));
    mo.kafka.topic_prefix = config.kafka_topic_prefix;
    mo.archive_path = mirror_archive;
    mo.writer = config.writer;
    mo.sources = {"main", "cache"};
    mo.group_id = "ferry-mirror-sandbox";
    FERRY_ASSIGN_OR_RETURN(mirror, cross_region::Mirror::Create(mo));
    mirror_thread = std::thread([&] { mirror_result = mirror->Run(); });
    std::printf("sandbox: second region: ferry mirror from Kafka (mock cluster at %s, topics %s.*) into %s\n",
                mo.kafka.brokers.c_str(), mo.kafka.topic_prefix.c_str(), mirror_archive.c_str());
    auto pgbench = [&](std::vector<std::string> args) -> absl::StatusOr<CommandResult> {
      std::vector<std::string> argv = {"pgbench", "-h", "127.0.0.1", "-p", std::to_string(pg->port()), "-U", "postgres"};
      argv.insert(argv.end(), args.begin(), args.end());
      argv.push_back("postgres");
      FERRY_ASSIGN_OR_RETURN(CommandResult r, pg->RunTool(argv));
      if (r.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench: ", r.err));
      return r;
    };
    FERRY_RETURN_IF_ERROR(pgbench({"-i", "-s", "5", "-q"}).status());
    FERRY_ASSIGN_OR_RETURN(PgBackupOutcome backup,
                           TakePostgresBackup(archive, config.sources[0], "full", nullptr, nullptr));
    std::printf("sandbox: base backup %s into the archive (%.1f MiB in %llu chunks, WAL %s .. %s)\n",
                backup.manifest.id.c_str(), static_cast<double>(backup.stats.raw_bytes) / (1 << 20),
                static_cast<unsigned long long>(backup.stats.chunks),
                backup.manifest.Get("start_lsn").c_str(), backup.manifest.Get("end_lsn").c_str());
    const int first_half = std::max(1, seconds / 2);
    std::printf("sandbox: running pgbench for %d s, marking an instant, then %d s more...\n", first_half,
                std::max(1, seconds - first_half));
    auto report = [](const CommandResult& load) {
      for (absl::string_view line : absl::StrSplit(load.out, '\n')) {
        if (absl::StrContains(line, "tps =") || absl::StrContains(line, "latency average")) {
          std::printf("sandbox:   %s\n", std::string(line).c_str());
        }
      }
    };
    // pgbench and redis-benchmark side by side; each half ends with both archived.
    auto both = [&](int secs) -> absl::StatusOr<CommandResult> {
      absl::StatusOr<CommandResult> redis_load;
      std::thread redis_thread([&] {
        redis_load = RunCommand({"redis-benchmark", "-h", "127.0.0.1", "-p", std::to_string(redis->port()), "-q",
                                 "-n", std::to_string(4000 * secs), "-c", "4", "-r", "10000", "-t",
                                 "set,incr,lpush,sadd,hset,zadd,mset"});
      });
      auto load = pgbench({"-T", std::to_string(secs), "-c", "4", "-j", "2"});
      redis_thread.join();
      FERRY_RETURN_IF_ERROR(redis_load.status());
      if (redis_load->exit_code != 0) return absl::InternalError(absl::StrCat("redis-benchmark: ", redis_load->err));
      FERRY_RETURN_IF_ERROR(WaitReplicaAcked(*redis, 60));
      return load;
    };
    FERRY_ASSIGN_OR_RETURN(CommandResult load, both(first_half));
    report(load);
    FERRY_ASSIGN_OR_RETURN(mid_sums, TableChecksums(*pg, kPgbenchTables));
    FERRY_ASSIGN_OR_RETURN(mid_digest, RedisDigest(*redis));
    mid_time = pipeline::NowUnixMicros();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // commits after it are later
    FERRY_ASSIGN_OR_RETURN(load, both(std::max(1, seconds - first_half)));
    report(load);
    return absl::OkStatus();
  }();
  if (!st.ok()) {
    stop_service();
    return st;
  }
  FERRY_ASSIGN_OR_RETURN(std::string primary_end, pg->Query("select pg_current_wal_flush_lsn()"));
  FERRY_ASSIGN_OR_RETURN(std::string flushed, pg->Query("select flush_lsn from pg_stat_replication where application_name = 'ferry_main'"));
  FERRY_ASSIGN_OR_RETURN(std::string sums, TableChecksums(*pg, kPgbenchTables));
  FERRY_ASSIGN_OR_RETURN(std::string final_digest, RedisDigest(*redis));
  FERRY_ASSIGN_OR_RETURN(pipeline::Lsn a, pipeline::Lsn::Parse(primary_end));
  FERRY_ASSIGN_OR_RETURN(pipeline::Lsn b, pipeline::Lsn::Parse(flushed));
  std::printf("sandbox: primary WAL ends at %s, ferry has synced %s: RPO %lld bytes\n", primary_end.c_str(),
              flushed.c_str(), static_cast<long long>(a.value() > b.value() ? a.value() - b.value() : 0));
  // The second region has the same bytes once Kafka and the mirror have caught up.
  std::map<std::string, uint64_t> here, there;
  // Bounded in time, not in tries: each look verifies both archives whole.
  const absl::Time give_up = absl::Now() + absl::Minutes(3);
  while (mirror != nullptr && absl::Now() < give_up) {
    here = StreamDigests(archive);
    there = StreamDigests(mirror_archive);
    if (!here.empty() && here == there) break;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  stop_mirror();
  stop_service();
  FERRY_RETURN_IF_ERROR(service_result);
  FERRY_RETURN_IF_ERROR(mirror_result);
  std::printf("\nsandbox: two regions, stream digests (ferry verify --json in each):\n");
  for (const auto& [stream, digest] : here) {
    const auto it = there.find(stream);
    std::printf("  %-22s primary %016llx  mirror %016llx  %s\n", stream.c_str(), static_cast<unsigned long long>(digest),
                static_cast<unsigned long long>(it == there.end() ? 0 : it->second),
                it != there.end() && it->second == digest ? "same bytes" : "DIFFERENT");
  }
  if (here != there) return absl::DataLossError("the mirror's archive differs from the primary region's");
  FERRY_RETURN_IF_ERROR(pg->Stop());
  FERRY_RETURN_IF_ERROR(redis->Stop());

  uint64_t transactions = 0, events = 0;
  FERRY_RETURN_IF_ERROR(ForEachArchivedTransaction(archive, "main", [&](const pipeline::ChangeBatch& txn) {
    ++transactions;
    events += txn.events.size();
  }));
  std::printf("\nsandbox: %llu change events in %llu transactions archived from slot ferry_main_cdc "
              "(ferry changes --archive %s --source main)\n",
              static_cast<unsigned long long>(events), static_cast<unsigned long long>(transactions), archive.c_str());

  std::printf("\nsandbox: ferry ls --archive %s\n", archive.c_str());
  CmdLs(archive, false);
  std::printf("\nsandbox: ferry verify --archive %s\n", archive.c_str());
  if (CmdVerify(archive, "", false) != 0) return absl::DataLossError("verify found damage");

  // Both databases from the archive alone, to the marked instant on ferry's one clock and to
  // the end, each compared with what its primary held then.
  struct Restore {
    const char* name;
    AllTarget target;
    const std::string* sums;
    const std::string* digest;
  };
  AllTarget at_mid;
  at_mid.time = mid_time;
  AllTarget at_end;
  at_end.latest = true;
  for (const Restore& r : {Restore{"mid", at_mid, &mid_sums, &mid_digest}, Restore{"latest", at_end, &sums, &final_digest}}) {
    const std::string to = absl::StrCat(dir, "/restored-", r.name);
    std::printf("\nsandbox: ferry restore all %s --to %s --start\n",
                r.target.latest ? "--latest" : absl::StrCat("--time ", pipeline::FormatUnixMicros(mid_time)).c_str(),
                to.c_str());
    const auto t0 = std::chrono::steady_clock::now();
    FERRY_ASSIGN_OR_RETURN(std::vector<SourceRestored> restored, RestoreAllTo(archive, r.target, to, SelfExecutable()));
    for (const SourceRestored& sr : restored) {
      std::printf("sandbox: %s (%s) to %s: %s\n", sr.source.c_str(), sr.kind.c_str(), sr.point.c_str(), sr.summary.c_str());
      if (sr.kind == "postgres") {
        FERRY_ASSIGN_OR_RETURN(PgStarted pg_restored, StartRestoredPostgres(sr.dir, 0, 600, sr.must_reach));
        const double rto = SecondsSince(t0);
        FERRY_ASSIGN_OR_RETURN(std::string restored_sums, TableChecksums(*pg_restored.server, kPgbenchTables));
        FERRY_RETURN_IF_ERROR(pg_restored.server->Stop());
        if (restored_sums != *r.sums) {
          return absl::DataLossError(absl::StrCat("restore to ", r.name, ": tables differ from the primary's at that point:\nexpected:\n",
                                                  *r.sums, "restored:\n", restored_sums));
        }
        std::printf("sandbox:   recovered in %.1f s (RTO); all %zu pgbench tables identical to the primary's at that point\n",
                    rto, kPgbenchTables.size());
      } else {
        FERRY_ASSIGN_OR_RETURN(auto redis_restored, StartRestoredRedis(sr.dir, 0));
        const double rto = SecondsSince(t0);
        FERRY_ASSIGN_OR_RETURN(std::string digest, RedisDigest(*redis_restored));
        FERRY_RETURN_IF_ERROR(redis_restored->Stop());
        if (digest != *r.digest) {
          return absl::DataLossError(absl::StrCat("Redis restore to ", r.name, ": DEBUG DIGEST ", digest,
                                                  " differs from the primary's ", *r.digest, " at that point"));
        }
        std::printf("sandbox:   loaded in %.1f s (RTO); DEBUG DIGEST %s equals the primary's at that point\n", rto,
                    digest.c_str());
      }
    }
  }

  std::printf("\nsandbox: ferry drill --config %s/ferry.toml\n", dir.c_str());
  FERRY_ASSIGN_OR_RETURN(DrillReport drill, RunDrill(config, "latest", SelfExecutable()));
  std::printf("%s", DrillTable(drill).c_str());
  if (!drill.ok()) return absl::DataLossError("the restore drill failed");
  return absl::OkStatus();
}

}  // namespace

int CmdSandbox(const std::string& dir_flag, int seconds, bool keep) {
  std::string dir = dir_flag;
  if (dir.empty()) {
    auto made = MakeTempDir("ferry-sandbox");
    if (!made.ok()) return Fail("sandbox", made.status());
    dir = *made;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  // The postgres user runs the servers and ferry wal-fetch: it must be able to read the dir.
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                        std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                        std::filesystem::perms::others_exec, ec);
  absl::Status st = RunSandbox(dir, seconds);
  if (!keep && st.ok()) std::filesystem::remove_all(dir, ec);
  if (!st.ok()) {
    std::fprintf(stderr, "sandbox: files kept in %s\n", dir.c_str());
    return Fail("sandbox", st);
  }
  std::printf("sandbox: ok\n");
  return 0;
}

}  // namespace ferry::tools
