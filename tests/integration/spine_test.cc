// The spine end to end against a real PostgreSQL 15: pgbench WAL -> ferry run -> archive ->
// ferry wal-fetch -> pg_waldump and PostgreSQL recovery; synchronous commit, kill -9, damage.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/pg/replication_conn.h"
#include "client/pg/server_version.h"
#include "local/local_postgres.h"
#include "local/pg_tools.h"
#include "local/process.h"
#include "pipeline/position.h"
#include "restore/recover.h"
#include "tests/fixtures/ferry_process.h"
#include "tests/fixtures/pg_cluster.h"

namespace ferry::testing {
namespace {

using pipeline::Lsn;
using local::LocalPostgres;


std::string TakeBaseBackup(const Cluster& c) {
  const std::string backup = c.dir + "/base";
  absl::Status st = local::TakeBaseBackupWithoutWal(*c.pg, backup);
  EXPECT_TRUE(st.ok()) << st;
  return backup;
}

std::unique_ptr<LocalPostgres> Restore(const Cluster& c, const std::string& backup, const std::string& name) {
  auto restored = restore::RecoverFromArchive(backup, c.dir + "/" + name, FERRY_BINARY, c.archive, "main", 180);
  EXPECT_TRUE(restored.ok()) << restored.status();
  return restored.ok() ? std::move(*restored) : nullptr;
}

class SpineTest : public ::testing::TestWithParam<std::string> {};

// pgbench load streams into the archive; verify passes; every complete segment wal-fetch
// produces is read by pg_waldump; a base backup plus wal-fetch recovers the same tables.
TEST_P(SpineTest, PgbenchArchivesAndRecoversIdenticalTables) {
  Cluster c = StartCluster(GetParam());
  ASSERT_NE(c.pg, nullptr);
  Pgbench(*c.pg, {"-i", "-s", "2", "-q"});
  const std::string backup = TakeBaseBackup(c);
  const int seconds = GetParam() == "io_uring" ? 30 : 10;
  Pgbench(*c.pg, {"-T", std::to_string(seconds), "-c", "2"});
  Q(*c.pg, "select pg_switch_wal()");
  Q(*c.pg, "checkpoint");
  WaitUntilArchived(*c.pg);
  const std::string primary_sums = TableChecksums(*c.pg);
  const std::string end_lsn = Q(*c.pg, "select pg_current_wal_flush_lsn()");
  auto code = c.ferry->Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << c.ferry->Log();

  auto verify = RunFerry({"verify", "--archive", c.archive, "--json"});
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->exit_code, 0) << verify->out << verify->err;
  EXPECT_NE(verify->out.find("\"ok\":true"), std::string::npos) << verify->out;

  // Every complete segment, materialised by wal-fetch, parses with pg_waldump.
  auto ls = RunFerry({"ls", "--archive", c.archive, "--json"});
  ASSERT_TRUE(ls.ok() && ls->exit_code == 0);
  const std::string waldir = c.dir + "/waldump";
  std::filesystem::create_directories(waldir);
  std::filesystem::permissions(waldir, std::filesystem::perms::all);
  const size_t start_at = ls->out.find("\"start\":\"") + 9;
  auto start = Lsn::Parse(ls->out.substr(start_at, ls->out.find('"', start_at) - start_at));
  auto end = Lsn::Parse(end_lsn);
  ASSERT_TRUE(start.ok() && end.ok()) << ls->out;
  const uint64_t seg = 16 << 20;
  std::vector<std::string> names;
  for (uint64_t segno = start->value() / seg; (segno + 1) * seg <= end->value(); ++segno) {
    const std::string name = client::pg::WalFileName(pipeline::TimelineId(1), segno, seg);
    auto f = RunFerry({"wal-fetch", "--archive", c.archive, "--source", "main", name, waldir + "/" + name});
    ASSERT_TRUE(f.ok());
    ASSERT_EQ(f->exit_code, 0) << name << ": " << f->err;
    ASSERT_EQ(std::filesystem::file_size(waldir + "/" + name), seg);
    names.push_back(name);
  }
  ASSERT_GE(names.size(), 2u) << "the load should span several segments";
  auto dump = c.pg->RunTool({"pg_waldump", "--stats", "-p", waldir, names.front(), names.back()});
  ASSERT_TRUE(dump.ok());
  // pg_waldump stops at the end of the last given segment; any error before that fails it.
  EXPECT_NE(dump->out.find("Total"), std::string::npos) << dump->err;
  EXPECT_EQ(dump->err.find("invalid record"), std::string::npos) << dump->err;
  EXPECT_EQ(dump->err.find("incorrect"), std::string::npos) << dump->err;
  auto missing = RunFerry({"wal-fetch", "--archive", c.archive, "--source", "main",
                           "00000001000000FF000000FF", waldir + "/x"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->exit_code, 1);

  auto restored = Restore(c, backup, "restored");
  ASSERT_NE(restored, nullptr);
  EXPECT_EQ(TableChecksums(*restored), primary_sums);
}

INSTANTIATE_TEST_SUITE_P(Writers, SpineTest, ::testing::Values("io_uring", "posix"));

// ferry as the synchronous standby: every commit that returned is durable in the archive, so
// after kill -9 of ferry and of the primary a restore has every committed row.
TEST(SpineSyncTest, SynchronousCommitsSurviveKillOfFerryAndPrimary) {
  Cluster c = StartCluster("io_uring", {"synchronous_standby_names = 'ferry_main'"});
  ASSERT_NE(c.pg, nullptr);
  ASSERT_TRUE(WaitFor([&] { return Q(*c.pg, "select sync_state from pg_stat_replication where application_name = 'ferry_main'") == "sync"; }, 30));
  Q(*c.pg, "create table t (id int primary key, v text)");
  const std::string backup = TakeBaseBackup(c);
  int committed = 0;
  for (int i = 1; i <= 300; ++i) {
    auto r = c.pg->Query(absl::StrCat("insert into t values (", i, ", repeat('x', 200))"));
    ASSERT_TRUE(r.ok()) << r.status();  // returns only once ferry reported it flushed
    committed = i;
  }
  ASSERT_TRUE(c.ferry->Kill9().ok());
  ASSERT_TRUE(c.pg->Kill().ok());
  auto restored = Restore(c, backup, "restored");
  ASSERT_NE(restored, nullptr);
  EXPECT_EQ(Q(*restored, "select count(*) from t"), std::to_string(committed));
  EXPECT_EQ(Q(*restored, "select max(id) from t"), std::to_string(committed));
}

// commit_delay = "auto": 10 ms while the primary does not name ferry in
// synchronous_standby_names, 0 once it does (noticed while streaming, without a reconnect),
// and back when it no longer does; /metrics shows the delay the batcher uses, and commits
// that wait on ferry meanwhile all return.
TEST(SpineSyncTest, AutoCommitDelayFollowsSynchronousStandbyNames) {
  auto pg = LocalPostgres::Create(local::LocalPostgresOptions{});
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto dir = local::MakeTempDir("ferry-it");
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto port = local::FindFreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  FerryService ferry(WriteConfig(*dir, *dir + "/archive", (*pg)->Conninfo(), "io_uring",
                                 absl::StrCat("scheduled_backups = false\n[http]\nlisten = \"127.0.0.1:", *port, "\"\n")),
                     *dir + "/ferry.log");
  ASSERT_TRUE(ferry.Start().ok());
  httplib::Client http("127.0.0.1", *port);
  auto delay_is = [&](const std::string& value) {
    auto r = http.Get("/metrics");
    return r && r->body.find(absl::StrCat("ferry_commit_delay_seconds{source=\"main\",kind=\"postgres\"} ", value, "\n")) !=
                    std::string::npos;
  };
  ASSERT_TRUE(WaitFor([&] { return delay_is("0.01"); }, 30)) << ferry.Log();
  EXPECT_NE(ferry.Log().find("event=commit_delay value=10ms reason=\"asynchronous: synchronous_standby_names "
                             "does not name ferry_main\""), std::string::npos) << ferry.Log();

  Q(**pg, "alter system set synchronous_standby_names = 'FIRST 1 (\"FERRY_MAIN\")'");
  Q(**pg, "select pg_reload_conf()");
  ASSERT_TRUE(WaitFor([&] { return delay_is("0"); }, 30)) << ferry.Log();
  EXPECT_NE(ferry.Log().find("event=commit_delay value=0 reason=\"synchronous_standby_names names ferry_main\""),
            std::string::npos) << ferry.Log();
  ASSERT_TRUE(WaitFor([&] { return Q(**pg, "select sync_state from pg_stat_replication where application_name = 'ferry_main'") == "sync"; }, 30));
  Q(**pg, "create table t (id int primary key)");
  for (int i = 1; i <= 100; ++i) {
    auto r = (*pg)->Query(absl::StrCat("insert into t values (", i, ")"));
    ASSERT_TRUE(r.ok()) << r.status();  // returns only once ferry reported it flushed
  }

  Q(**pg, "alter system set synchronous_standby_names = ''");
  Q(**pg, "select pg_reload_conf()");
  ASSERT_TRUE(WaitFor([&] { return delay_is("0.01"); }, 30)) << ferry.Log();
  auto code = ferry.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << ferry.Log();
}

// kill -9 of ferry under load, restart: no gap, no duplicate, and the slot never claims more
// than the archive holds.
TEST(SpineCrashTest, Kill9UnderLoadResumesWithoutGap) {
  Cluster c = StartCluster("io_uring");
  ASSERT_NE(c.pg, nullptr);
  Pgbench(*c.pg, {"-i", "-s", "1", "-q"});
  std::thread load([&] { Pgbench(*c.pg, {"-T", "12", "-c", "2"}); });
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    // Slot first, archive second: the archive only grows, so slot <= archive must hold.
    auto slot = Lsn::Parse(Q(*c.pg, "select restart_lsn from pg_replication_slots where slot_name = 'ferry_main'"));
    ASSERT_TRUE(slot.ok());
    auto archived = Lsn::Parse(ArchiveEnd(c.archive, "main", "pg-wal"));
    ASSERT_TRUE(archived.ok());
    EXPECT_LE(*slot, *archived) << "slot confirmed past what is synced";
    ASSERT_TRUE(c.ferry->Kill9().ok());
    ASSERT_TRUE(c.ferry->Start().ok());
  }
  load.join();
  WaitUntilArchived(*c.pg);
  auto code = c.ferry->Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << c.ferry->Log();
  auto verify = RunFerry({"verify", "--archive", c.archive});
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->exit_code, 0) << verify->out << verify->err;
}

// Damage is named by file and offset; a bad config exits 2 naming the key.
TEST(SpineDamageTest, CorruptByteIsNamedAndBadConfigExitsTwo) {
  Cluster c = StartCluster("posix");
  ASSERT_NE(c.pg, nullptr);
  Q(*c.pg, "create table t as select g, md5(g::text) from generate_series(1, 20000) g");
  WaitUntilArchived(*c.pg);
  ASSERT_TRUE(c.ferry->Terminate().ok());
  const std::string seg = c.archive + "/streams/main/pg-wal/0000000000000001.seg";
  const auto size = std::filesystem::file_size(seg);
  {
    int fd = open(seg.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char b;
    ASSERT_EQ(pread(fd, &b, 1, size / 2), 1);
    b ^= 0x10;
    ASSERT_EQ(pwrite(fd, &b, 1, size / 2), 1);
    close(fd);
  }
  auto verify = RunFerry({"verify", "--archive", c.archive});
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->exit_code, 1);
  EXPECT_NE(verify->err.find(seg), std::string::npos) << verify->err;
  EXPECT_NE(verify->err.find("offset"), std::string::npos) << verify->err;

  std::ofstream(c.dir + "/bad.toml") << "[archive]\npath = \"/tmp/x\"\nwriter = \"floppy\"\n";
  auto bad = RunFerry({"run", "--config", c.dir + "/bad.toml"});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_NE(bad->err.find("archive.writer"), std::string::npos) << bad->err;
}

}  // namespace
}  // namespace ferry::testing

namespace ferry::testing {
namespace {

// ferry streams from a standby that is then promoted (on 15 and the newest major): it follows
// the server to timeline 2, archives 00000002.history, and a restore through wal-fetch (which
// stitches the segment of the fork from both timelines) has every row from before and after
// the promotion.
class SpineTimelineTest : public ::testing::TestWithParam<int> {};

TEST_P(SpineTimelineTest, FollowsPromotionToTheNextTimeline) {
  // The primary, streamed by a first ferry whose archive seeds the standby (restore
  // --standby, then streaming from the primary): no client tool of another major needed.
  Cluster seed = StartCluster("posix", {}, GetParam());
  ASSERT_NE(seed.pg, nullptr);
  LocalPostgres* primary = seed.pg.get();
  Q(*primary, "create table t (id int primary key, tl int)");
  Q(*primary, "insert into t select g, 1 from generate_series(1, 1000) g");
  ASSERT_TRUE(RunFerrySucceeding({"backup", "--config", seed.config, "--source", "main"}, "seed backup"));
  auto made = local::MakeTempDir("ferry-tl");
  ASSERT_TRUE(made.ok()) << made.status();
  const std::string dir = *made;
  const std::string standby_dir = dir + "/standby";
  ASSERT_TRUE(RunFerrySucceeding({"restore", "postgres", "--archive", seed.archive, "--source", "main", "--latest",
                                  "--standby", "--to", standby_dir},
                                 "restore --standby"));
  // Streaming only, as pg_basebackup -R would set it up: the seed archive trails the primary,
  // and at the promotion recovery would take its shorter copy of the last segment.
  std::ofstream(standby_dir + "/postgresql.auto.conf", std::ios::app)
      << "primary_conninfo = '" << primary->Conninfo() << "'\nrestore_command = ''\n";
  auto standby = LocalPostgres::StartExisting(standby_dir);
  ASSERT_TRUE(standby.ok()) << standby.status();
  ASSERT_TRUE(WaitFor([&] { return (*standby)->Query("select count(*) from t").value_or("") == "1000"; }, 60));
  ASSERT_TRUE(WaitFor([&] { return Q(*primary, "select count(*) from pg_stat_replication where state = 'streaming'") == "2"; }, 60))
      << "the standby does not stream from the primary";

  const std::string archive = dir + "/archive";
  FerryService ferry(WriteConfig(dir, archive, (*standby)->Conninfo(), "io_uring"), dir + "/ferry.log");
  ASSERT_TRUE(ferry.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return FerryFlush(**standby).valid(); }, 30)) << ferry.Log();
  // The backup is taken from the standby ferry follows, into the archive (BASE_BACKUP on a
  // standby), and the restore below crosses the promotion on that backup's WAL.
  const std::string config = dir + "/ferry.toml";
  auto backup = RunFerry({"backup", "--config", config, "--source", "main"});
  ASSERT_TRUE(backup.ok());
  ASSERT_EQ(backup->exit_code, 0) << backup->err;
  Q(*primary, "insert into t select g, 1 from generate_series(1001, 2000) g");
  ASSERT_TRUE(WaitFor([&] { return (*standby)->Query("select count(*) from t").value_or("") == "2000"; }, 60));
  ASSERT_TRUE(seed.ferry->Terminate().ok());
  ASSERT_TRUE(primary->Stop().ok());

  Q(**standby, "select pg_promote()");
  ASSERT_TRUE(WaitFor([&] { return (*standby)->Query("select pg_is_in_recovery()").value_or("") == "f"; }, 60));
  Q(**standby, "insert into t select g, 2 from generate_series(2001, 3000) g");
  usleep(200000);
  const std::string on_new_timeline = Q(**standby,
      "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
  usleep(200000);
  Q(**standby, "insert into t select g, 2 from generate_series(3001, 3500) g");
  WaitUntilArchived(**standby);
  auto code = ferry.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << ferry.Log();

  auto ls = RunFerry({"ls", "--archive", archive, "--json"});
  ASSERT_TRUE(ls.ok());
  EXPECT_NE(ls->out.find("\"epoch\":2"), std::string::npos) << ls->out;
  EXPECT_NE(ls->out.find("00000002.history"), std::string::npos) << ls->out;
  auto verify = RunFerry({"verify", "--archive", archive});
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->exit_code, 0) << verify->out << verify->err;

  // A time on timeline 2, from a backup taken on timeline 1.
  const std::string to = dir + "/restored";
  auto restore = RunFerry({"restore", "postgres", "--archive", archive, "--source", "main", "--time",
                           on_new_timeline, "--to", to});
  ASSERT_TRUE(restore.ok());
  ASSERT_EQ(restore->exit_code, 0) << restore->err;
  auto restored = LocalPostgres::StartExisting(to);
  ASSERT_TRUE(restored.ok()) << restored.status();
  ASSERT_TRUE(WaitFor([&] { return (*restored)->Query("select pg_is_in_recovery()").value_or("") == "f"; }, 120))
      << "recovery did not finish; see " << (*restored)->log_path();
  EXPECT_EQ(Q(**restored, "select count(*) || '/' || sum(tl) from t"), "3000/4000");
}

INSTANTIATE_TEST_SUITE_P(Majors, SpineTimelineTest, ::testing::Values(15, client::pg::kNewestMajor),
                         [](const ::testing::TestParamInfo<int>& info) { return absl::StrCat("PostgreSQL", info.param); });

}  // namespace
}  // namespace ferry::testing
