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
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "backup/pg_backup.h"
#include "cross_region/mirror.h"
#include "local/local_postgres.h"
#include "local/local_redis.h"
#include "local/pg_tools.h"
#include "local/process.h"
#include "pipeline/check.h"
#include "pipeline/position.h"
#include "restore/drill.h"
#include "restore/pg_restore.h"
#include "restore/restore_all.h"
#include "service/service.h"
#include "storage/durable_file.h"
#include "tools/commands.h"

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

// What the primaries held at a point of the load: the restores to that point must match it.
struct PrimaryState {
  std::string sums;    // TableChecksums of the pgbench tables
  std::string digest;  // Redis DEBUG DIGEST
};

// The sandbox's servers and threads, and what its steps hand on to the next ones. Destroying
// it stops the mirror and the service (on any error) before the servers go.
class Sandbox {
 public:
  Sandbox(const std::string& dir, int seconds, const std::string& pg_bin)
      : dir_(dir), seconds_(seconds), pg_bin_(pg_bin), archive_(dir + "/archive"), mirror_archive_(dir + "/mirror") {}
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;
  ~Sandbox() {
    StopMirror();
    StopService();
  }

  absl::Status StartPrimaries();
  absl::Status StartService();
  absl::Status WaitStreaming();
  absl::Status StartMirror();
  absl::Status RunLoad();
  absl::Status MeasureRpo();
  absl::Status CompareRegions();
  absl::Status ShowArchive();
  absl::Status CheckRestores();
  absl::Status CheckDrill();

 private:
  absl::StatusOr<local::CommandResult> Pgbench(std::vector<std::string> args);
  absl::StatusOr<local::CommandResult> LoadBoth(int secs);
  absl::Status CheckRestore(const char* name, const restore::AllTarget& target, const PrimaryState& expected);
  absl::Status CheckRestoredPostgres(const char* name, const restore::SourceRestored& sr, const PrimaryState& expected,
                                     std::chrono::steady_clock::time_point t0);
  absl::Status CheckRestoredRedis(const char* name, const restore::SourceRestored& sr, const PrimaryState& expected,
                                  std::chrono::steady_clock::time_point t0);
  void StopService();
  void StopMirror();

  const std::string dir_;
  const int seconds_;
  const std::string pg_bin_;  // --pg-bin: the PostgreSQL to run; empty: Debian's 15
  const std::string archive_;
  const std::string mirror_archive_;
  std::unique_ptr<local::LocalPostgres> pg_;
  std::unique_ptr<local::LocalRedis> redis_;
  config::Config config_;
  std::unique_ptr<service::Service> service_;
  std::thread runner_;
  absl::Status service_result_;
  std::unique_ptr<cross_region::Mirror> mirror_;
  std::thread mirror_thread_;
  absl::Status mirror_result_;
  PrimaryState mid_;  // at mid_time_, between the two halves of the load
  pipeline::UnixMicros mid_time_ = 0;
  PrimaryState end_;  // once the load has ended
  std::map<std::string, uint64_t> here_, there_;  // stream digests of the two regions' archives
};

void Sandbox::StopService() {
  if (!runner_.joinable()) return;
  service_->Stop();
  runner_.join();
}

void Sandbox::StopMirror() {
  if (!mirror_thread_.joinable()) return;
  mirror_->Stop();
  mirror_thread_.join();
}

absl::Status Sandbox::StartPrimaries() {
  local::LocalPostgresOptions po;
  po.base_dir = dir_ + "/primary";
  // ferry is the synchronous standby: a commit returns only once it is durable in the archive.
  po.settings = {"synchronous_standby_names = 'ferry_main'"};
  if (!pg_bin_.empty()) {
    FERRY_ASSIGN_OR_RETURN(po.major, local::ServerBinMajor(pg_bin_));
    po.pg_bin = pg_bin_;
  }
  FERRY_ASSIGN_OR_RETURN(pg_, local::LocalPostgres::Create(po));
  std::printf("sandbox: PostgreSQL %d on 127.0.0.1:%d (synchronous_standby_names = 'ferry_main')\n", pg_->major(),
              pg_->port());

  local::LocalRedisOptions ro;
  ro.dir = dir_ + "/redis";
  FERRY_ASSIGN_OR_RETURN(redis_, local::LocalRedis::Start(ro));
  std::printf("sandbox: Redis on %s\n", redis_->Address().c_str());
  return absl::OkStatus();
}

// Writes DIR/ferry.toml for both primaries and runs the service on it in a thread.
absl::Status Sandbox::StartService() {
  // The restores below run PostgreSQL (and its restore_command) as the postgres user.
  FERRY_RETURN_IF_ERROR(local::MakeArchiveDirForServerUser(archive_));
  const std::string config_text = absl::StrCat(
      "region = \"sandbox\"\n[archive]\npath = \"", archive_, "\"\nwriter = \"io_uring\"\n\n",
      "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"", pg_->Conninfo(), "\"\n",
      // The sandbox takes its backup itself, at a known moment, instead of on a schedule.
      "scheduled_backups = false\n",
      // Row-level change events too (pg-changes), published per table as Debezium JSON.
      "logical_slot = \"ferry_main_cdc\"\n",
      // Restores and the drill run the same server binaries.
      pg_bin_.empty() ? "" : absl::StrCat("pg_bin = \"", pg_bin_, "\"\n"), "\n",
      // Kafka: librdkafka's mock cluster inside the service; a second region mirrors it.
      "[kafka]\nbrokers = \"mock:1\"\n\n",
      "[[source]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"", redis_->Address(), "\"\n");
  std::ofstream(dir_ + "/ferry.toml") << config_text;
  FERRY_ASSIGN_OR_RETURN(config_, config::ParseConfig(config_text, dir_ + "/ferry.toml"));
  absl::StatusOr<std::unique_ptr<service::Service>> service = service::Service::Create(config_);
  if (!service.ok() && absl::IsFailedPrecondition(service.status()) &&
      config_.writer == storage::WriterKind::kIoUring) {
    std::printf("sandbox: %s; using writer = \"posix\"\n", std::string(service.status().message()).c_str());
    config_.writer = storage::WriterKind::kPosix;  // io_uring blocked here: use the fallback
    service = service::Service::Create(config_);
  }
  FERRY_RETURN_IF_ERROR(service.status());
  service_ = *std::move(service);
  runner_ = std::thread([this] { service_result_ = service_->Run(); });
  return absl::OkStatus();
}

// Until the service is PostgreSQL's synchronous standby and Redis's acknowledged replica.
absl::Status Sandbox::WaitStreaming() {
  for (int i = 0; i < 300; ++i) {
    auto s = pg_->Query("select sync_state from pg_stat_replication where application_name = 'ferry_main'");
    if (s.ok() && *s == "sync") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FERRY_RETURN_IF_ERROR(local::WaitReplicaAcked(*redis_, 60));  // ferry is Redis's replica too
  std::printf("sandbox: ferry streaming into %s\n", archive_.c_str());
  return absl::OkStatus();
}

// The second region: ferry mirror from the service's Kafka (mock cluster) into its own archive.
absl::Status Sandbox::StartMirror() {
  FERRY_RETURN_IF_ERROR(local::MakeArchiveDirForServerUser(mirror_archive_));
  FERRY_ASSIGN_OR_RETURN(std::string bootstrap, storage::ReadWholeFile(archive_ + "/KAFKA"));
  cross_region::MirrorOptions mo;
  mo.kafka.brokers = std::string(absl::StripAsciiWhitespace(bootstrap));
  mo.kafka.topic_prefix = config_.kafka_topic_prefix;
  mo.archive_path = mirror_archive_;
  mo.writer = config_.writer;
  mo.sources = {"main", "cache"};
  mo.group_id = "ferry-mirror-sandbox";
  FERRY_ASSIGN_OR_RETURN(mirror_, cross_region::Mirror::Create(mo));
  mirror_thread_ = std::thread([this] { mirror_result_ = mirror_->Run(); });
  std::printf("sandbox: second region: ferry mirror from Kafka (mock cluster at %s, topics %s.*) into %s\n",
              mo.kafka.brokers.c_str(), mo.kafka.topic_prefix.c_str(), mirror_archive_.c_str());
  return absl::OkStatus();
}

absl::StatusOr<local::CommandResult> Sandbox::Pgbench(std::vector<std::string> args) {
  std::vector<std::string> argv = {"pgbench", "-h", "127.0.0.1", "-p", std::to_string(pg_->port()), "-U", "postgres"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("postgres");
  FERRY_ASSIGN_OR_RETURN(local::CommandResult r, pg_->RunTool(argv));
  if (r.exit_code != 0) return absl::AbortedError(absl::StrCat("pgbench: ", r.err));
  return r;
}

// pgbench and redis-benchmark side by side for `secs`; returns with both archived.
absl::StatusOr<local::CommandResult> Sandbox::LoadBoth(int secs) {
  absl::StatusOr<local::CommandResult> redis_load;
  std::thread redis_thread([&] {
    redis_load = local::RunCommand({"redis-benchmark", "-h", "127.0.0.1", "-p", std::to_string(redis_->port()), "-q",
                             "-n", std::to_string(4000 * secs), "-c", "4", "-r", "10000", "-t",
                             "set,incr,lpush,sadd,hset,zadd,mset"});
  });
  auto load = Pgbench({"-T", std::to_string(secs), "-c", "4", "-j", "2"});
  redis_thread.join();
  FERRY_RETURN_IF_ERROR(redis_load.status());
  if (redis_load->exit_code != 0) return absl::AbortedError(absl::StrCat("redis-benchmark: ", redis_load->err));
  FERRY_RETURN_IF_ERROR(local::WaitReplicaAcked(*redis_, 60));
  return load;
}

// Prints pgbench's TPS and latency lines.
void ReportLoad(const local::CommandResult& load) {
  for (absl::string_view line : absl::StrSplit(load.out, '\n')) {
    if (absl::StrContains(line, "tps =") || absl::StrContains(line, "latency average")) {
      std::printf("sandbox:   %s\n", std::string(line).c_str());
    }
  }
}

// pgbench's tables and a base backup of them, then two halves of load with the primaries'
// state taken between them (mid_).
absl::Status Sandbox::RunLoad() {
  FERRY_RETURN_IF_ERROR(Pgbench({"-i", "-s", "5", "-q"}).status());
  FERRY_ASSIGN_OR_RETURN(backup::PgBackupOutcome backup,
                         backup::TakePostgresBackup(archive_, config_.sources[0], "full", nullptr, nullptr));
  std::printf("sandbox: base backup %s into the archive (%.1f MiB in %llu chunks, WAL %s .. %s)\n",
              backup.manifest.id.c_str(), static_cast<double>(backup.stats.raw_bytes) / (1 << 20),
              static_cast<unsigned long long>(backup.stats.chunks),
              backup.manifest.Get("start_lsn").c_str(), backup.manifest.Get("end_lsn").c_str());
  const int first_half = std::max(1, seconds_ / 2);
  std::printf("sandbox: running pgbench for %d s, marking an instant, then %d s more...\n", first_half,
              std::max(1, seconds_ - first_half));
  FERRY_ASSIGN_OR_RETURN(local::CommandResult load, LoadBoth(first_half));
  ReportLoad(load);
  FERRY_ASSIGN_OR_RETURN(mid_.sums, local::TableChecksums(*pg_, kPgbenchTables));
  FERRY_ASSIGN_OR_RETURN(mid_.digest, local::RedisDigest(*redis_));
  mid_time_ = pipeline::NowUnixMicros();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // commits after it are later
  FERRY_ASSIGN_OR_RETURN(load, LoadBoth(std::max(1, seconds_ - first_half)));
  ReportLoad(load);
  return absl::OkStatus();
}

// The primaries' final state (end_), and how far the archive's synced WAL is behind the primary's.
absl::Status Sandbox::MeasureRpo() {
  FERRY_ASSIGN_OR_RETURN(std::string primary_end, pg_->Query("select pg_current_wal_flush_lsn()"));
  FERRY_ASSIGN_OR_RETURN(std::string flushed, pg_->Query("select flush_lsn from pg_stat_replication where application_name = 'ferry_main'"));
  FERRY_ASSIGN_OR_RETURN(end_.sums, local::TableChecksums(*pg_, kPgbenchTables));
  FERRY_ASSIGN_OR_RETURN(end_.digest, local::RedisDigest(*redis_));
  FERRY_ASSIGN_OR_RETURN(pipeline::Lsn a, pipeline::Lsn::Parse(primary_end));
  FERRY_ASSIGN_OR_RETURN(pipeline::Lsn b, pipeline::Lsn::Parse(flushed));
  std::printf("sandbox: primary WAL ends at %s, ferry has synced %s: RPO %lld bytes\n", primary_end.c_str(),
              flushed.c_str(), static_cast<long long>(a.value() > b.value() ? a.value() - b.value() : 0));
  return absl::OkStatus();
}

// Stops the mirror and the service once the second region has caught up, and compares the
// two archives stream by stream.
absl::Status Sandbox::CompareRegions() {
  // The second region has the same bytes once Kafka and the mirror have caught up.
  // Bounded in time, not in tries: each look verifies both archives whole.
  const absl::Time give_up = absl::Now() + absl::Minutes(3);
  while (mirror_ != nullptr && absl::Now() < give_up) {
    here_ = StreamDigests(archive_);
    there_ = StreamDigests(mirror_archive_);
    if (!here_.empty() && here_ == there_) break;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  StopMirror();
  StopService();
  FERRY_RETURN_IF_ERROR(service_result_);
  FERRY_RETURN_IF_ERROR(mirror_result_);
  std::printf("\nsandbox: two regions, stream digests (ferry verify --json in each):\n");
  for (const auto& [stream, digest] : here_) {
    const auto it = there_.find(stream);
    std::printf("  %-22s primary %016llx  mirror %016llx  %s\n", stream.c_str(), static_cast<unsigned long long>(digest),
                static_cast<unsigned long long>(it == there_.end() ? 0 : it->second),
                it != there_.end() && it->second == digest ? "same bytes" : "DIFFERENT");
  }
  if (here_ != there_) return absl::DataLossError("the mirror's archive differs from the primary region's");
  return absl::OkStatus();
}

// Stops the primaries and shows the archive as its commands do: changes, ls, verify.
absl::Status Sandbox::ShowArchive() {
  FERRY_RETURN_IF_ERROR(pg_->Stop());
  FERRY_RETURN_IF_ERROR(redis_->Stop());

  uint64_t transactions = 0, events = 0;
  FERRY_RETURN_IF_ERROR(ForEachArchivedTransaction(archive_, "main", [&](const pipeline::ChangeBatch& txn) {
    ++transactions;
    events += txn.events.size();
  }));
  std::printf("\nsandbox: %llu change events in %llu transactions archived from slot ferry_main_cdc "
              "(ferry changes --archive %s --source main)\n",
              static_cast<unsigned long long>(events), static_cast<unsigned long long>(transactions), archive_.c_str());

  std::printf("\nsandbox: ferry ls --archive %s\n", archive_.c_str());
  CmdLs(archive_, false);
  std::printf("\nsandbox: ferry verify --archive %s\n", archive_.c_str());
  if (CmdVerify(archive_, "", false) != 0) return absl::DataLossError("verify found damage");
  return absl::OkStatus();
}

// Both databases from the archive alone, to the marked instant on ferry's one clock and to
// the end, each compared with what its primary held then.
absl::Status Sandbox::CheckRestores() {
  restore::AllTarget at_mid;
  at_mid.time = mid_time_;
  FERRY_RETURN_IF_ERROR(CheckRestore("mid", at_mid, mid_));
  restore::AllTarget at_end;
  at_end.latest = true;
  return CheckRestore("latest", at_end, end_);
}

absl::Status Sandbox::CheckRestore(const char* name, const restore::AllTarget& target, const PrimaryState& expected) {
  const std::string to = absl::StrCat(dir_, "/restored-", name);
  std::printf("\nsandbox: ferry restore all %s --to %s --start\n",
              target.latest ? "--latest" : absl::StrCat("--time ", pipeline::FormatUnixMicros(mid_time_)).c_str(),
              to.c_str());
  const auto t0 = std::chrono::steady_clock::now();
  FERRY_ASSIGN_OR_RETURN(std::vector<restore::SourceRestored> restored, restore::RestoreAllTo(archive_, target, to, local::SelfExecutable()));
  for (const restore::SourceRestored& sr : restored) {
    std::printf("sandbox: %s (%s) to %s: %s\n", sr.source.c_str(), sr.kind.c_str(), sr.point.c_str(), sr.summary.c_str());
    if (sr.kind == "postgres") {
      FERRY_RETURN_IF_ERROR(CheckRestoredPostgres(name, sr, expected, t0));
    } else {
      FERRY_RETURN_IF_ERROR(CheckRestoredRedis(name, sr, expected, t0));
    }
  }
  return absl::OkStatus();
}

absl::Status Sandbox::CheckRestoredPostgres(const char* name, const restore::SourceRestored& sr, const PrimaryState& expected,
                                            std::chrono::steady_clock::time_point t0) {
  FERRY_ASSIGN_OR_RETURN(restore::PgStarted pg_restored, restore::StartRestoredPostgres(sr.dir, 0, 600, sr.must_reach, pg_bin_));
  const double rto = SecondsSince(t0);
  FERRY_ASSIGN_OR_RETURN(std::string restored_sums, local::TableChecksums(*pg_restored.server, kPgbenchTables));
  FERRY_RETURN_IF_ERROR(pg_restored.server->Stop());
  if (restored_sums != expected.sums) {
    return absl::DataLossError(absl::StrCat("restore to ", name, ": tables differ from the primary's at that point:\nexpected:\n",
                                            expected.sums, "restored:\n", restored_sums));
  }
  std::printf("sandbox:   recovered in %.1f s (RTO); all %zu pgbench tables identical to the primary's at that point\n",
              rto, kPgbenchTables.size());
  return absl::OkStatus();
}

absl::Status Sandbox::CheckRestoredRedis(const char* name, const restore::SourceRestored& sr, const PrimaryState& expected,
                                         std::chrono::steady_clock::time_point t0) {
  FERRY_ASSIGN_OR_RETURN(auto redis_restored, restore::StartRestoredRedis(sr.dir, 0));
  const double rto = SecondsSince(t0);
  FERRY_ASSIGN_OR_RETURN(std::string digest, local::RedisDigest(*redis_restored));
  FERRY_RETURN_IF_ERROR(redis_restored->Stop());
  if (digest != expected.digest) {
    return absl::DataLossError(absl::StrCat("Redis restore to ", name, ": DEBUG DIGEST ", digest,
                                            " differs from the primary's ", expected.digest, " at that point"));
  }
  std::printf("sandbox:   loaded in %.1f s (RTO); DEBUG DIGEST %s equals the primary's at that point\n", rto,
              digest.c_str());
  return absl::OkStatus();
}

absl::Status Sandbox::CheckDrill() {
  std::printf("\nsandbox: ferry drill --config %s/ferry.toml\n", dir_.c_str());
  FERRY_ASSIGN_OR_RETURN(restore::DrillReport drill, restore::RunDrill(config_, "latest", local::SelfExecutable()));
  std::printf("%s", restore::DrillTable(drill).c_str());
  if (!drill.ok()) return absl::DataLossError("the restore drill failed");
  return absl::OkStatus();
}

absl::Status RunSandbox(const std::string& dir, int seconds, const std::string& pg_bin) {
  std::printf("sandbox: working in %s\n", dir.c_str());
  Sandbox sandbox(dir, seconds, pg_bin);
  FERRY_RETURN_IF_ERROR(sandbox.StartPrimaries());
  FERRY_RETURN_IF_ERROR(sandbox.StartService());
  FERRY_RETURN_IF_ERROR(sandbox.WaitStreaming());
  FERRY_RETURN_IF_ERROR(sandbox.StartMirror());
  FERRY_RETURN_IF_ERROR(sandbox.RunLoad());
  FERRY_RETURN_IF_ERROR(sandbox.MeasureRpo());
  FERRY_RETURN_IF_ERROR(sandbox.CompareRegions());
  FERRY_RETURN_IF_ERROR(sandbox.ShowArchive());
  FERRY_RETURN_IF_ERROR(sandbox.CheckRestores());
  return sandbox.CheckDrill();
}

}  // namespace

int CmdSandbox(const std::string& dir_flag, int seconds, bool keep, const std::string& pg_bin) {
  std::string dir = dir_flag;
  if (dir.empty()) {
    auto made = local::MakeTempDir("ferry-sandbox");
    if (!made.ok()) return Fail("sandbox", made.status());
    dir = *made;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  // The postgres user runs the servers and ferry wal-fetch: it must be able to read the dir.
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                        std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                        std::filesystem::perms::others_exec, ec);
  absl::Status st = RunSandbox(dir, seconds, pg_bin);
  if (!keep && st.ok()) std::filesystem::remove_all(dir, ec);
  if (!st.ok()) {
    std::fprintf(stderr, "sandbox: files kept in %s\n", dir.c_str());
    return Fail("sandbox", st);
  }
  std::printf("sandbox: ok\n");
  return 0;
}

}  // namespace ferry::tools
