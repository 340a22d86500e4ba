// ferry on every supported PostgreSQL major besides 15 (which the rest of the suite runs),
// with the official server builds the install step caches (scripts/fetch-postgres.sh). The
// judges are the servers themselves: pg_wal's own segments, and recovery by that major.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/pg/server_version.h"
#include "local/local_postgres.h"
#include "pipeline/position.h"
#include "tests/fixtures/ferry_process.h"
#include "tests/fixtures/pg_cluster.h"

namespace ferry::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class PgVersionsTest : public ::testing::TestWithParam<int> {};

// Compares every WAL segment the server completed with what `ferry wal-fetch` makes of the
// archive; returns how many were compared (segments before the archive's start are skipped,
// any missing after it is a failure).
int CompareCompletedSegments(const Cluster& c) {
  const std::string current = Q(*c.pg, "select pg_walfile_name(pg_current_wal_lsn())");
  const std::string pg_wal = c.pg->data_dir() + "/pg_wal";
  const std::string fetched = c.dir + "/fetched";
  std::filesystem::create_directories(fetched);
  int compared = 0;
  std::vector<std::string> names;  // oldest first
  for (const auto& e : std::filesystem::directory_iterator(pg_wal)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    // A recycled segment renamed ahead of the end is not WAL yet.
    if (name.size() != 24 || name >= current) continue;
    auto f = RunFerry({"wal-fetch", "--archive", c.archive, "--source", "main", name, fetched + "/" + name});
    EXPECT_TRUE(f.ok()) << f.status();
    if (!f.ok()) return compared;
    // Before the archive's start only: once one segment came back, every later one must.
    if (f->exit_code == 1 && compared == 0) continue;
    EXPECT_EQ(f->exit_code, 0) << name << ": " << f->err;
    EXPECT_TRUE(ReadFile(fetched + "/" + name) == ReadFile(pg_wal + "/" + name))
        << "segment " << name << " from the archive differs from pg_wal's";
    ++compared;
  }
  return compared;
}

// The core of the suite on one major: ferry as the synchronous standby under pgbench, killed
// with -9 twice under load and restarted (the slot never passes the archive); every
// completed segment byte-identical to pg_wal; a `ferry backup`; synchronous commits that all
// survive kill -9 of ferry and of the primary; `verify`; restores with that major's server to
// a time, an LSN and the latest commit equal to what the primary had; and a drill.
TEST_P(PgVersionsTest, StreamsBacksUpSurvivesKillsAndRestoresToAnyPoint) {
  const int major = GetParam();
  Cluster c = StartCluster("io_uring", {"synchronous_standby_names = 'ferry_main'"}, major);
  ASSERT_NE(c.pg, nullptr);
  EXPECT_EQ(Q(*c.pg, "select current_setting('server_version_num')::int / 10000"), std::to_string(major));
  ASSERT_TRUE(WaitFor([&] { return Q(*c.pg, "select sync_state from pg_stat_replication") == "sync"; }, 30))
      << c.ferry->Log();
  Pgbench(*c.pg, {"-i", "-s", "2", "-q"});
  ASSERT_TRUE(RunFerrySucceeding({"backup", "--config", c.config, "--source", "main"}, "backup"));

  // Synchronous commits wait while ferry is down and go on once it is back.
  std::thread load([&] { Pgbench(*c.pg, {"-T", "8", "-c", "2"}); });
  for (int round = 0; round < 2; ++round) {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    // Slot first, archive second: the archive only grows, so slot <= archive must hold.
    auto slot = pipeline::Lsn::Parse(Q(*c.pg, "select restart_lsn from pg_replication_slots"));
    auto archived = pipeline::Lsn::Parse(ArchiveEnd(c.archive, "main", "pg-wal"));
    EXPECT_TRUE(slot.ok() && archived.ok());
    if (slot.ok() && archived.ok()) {
      EXPECT_LE(*slot, *archived) << "slot confirmed past what is synced";
    }
    EXPECT_TRUE(c.ferry->Kill9().ok());
    EXPECT_TRUE(c.ferry->Start().ok());
  }
  load.join();

  Q(*c.pg, "create table t (id int primary key, v text)");
  const TwoStates states = WriteTwoStates(*c.pg);
  // Each returns only once ferry has it durable.
  for (int i = 1; i <= 200; ++i) Q(*c.pg, absl::StrCat("insert into t values (", 1000 + i, ", repeat('x', 200))"));
  const std::string s3 = Q(*c.pg, kSumOfT);
  const std::string pgbench = TableChecksums(*c.pg);
  Q(*c.pg, "select pg_switch_wal()");
  WaitUntilArchived(*c.pg);
  EXPECT_GE(CompareCompletedSegments(c), 1) << "no completed segment to compare";
  auto verify = RunFerry({"verify", "--archive", c.archive});
  ASSERT_TRUE(verify.ok()) << verify.status();
  EXPECT_EQ(verify->exit_code, 0) << verify->out << verify->err;

  ASSERT_TRUE(c.ferry->Kill9().ok());
  ASSERT_TRUE(c.pg->Kill().ok());
  struct Case {
    std::string name;
    std::vector<std::string> target;
    std::string sum;
  };
  // --pg-bin: the server binaries named, checked to be the backup's major.
  auto bin = local::PgServerBinDir(major);
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto other = local::PgServerBinDir(major == 15 ? 16 : 15);
  ASSERT_TRUE(other.ok()) << other.status();
  auto wrong = RunFerry({"restore", "postgres", "--archive", c.archive, "--source", "main", "--latest", "--to",
                         c.dir + "/wrong-bin", "--start", "--pg-bin", *other});
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_EQ(wrong->exit_code, 1);
  EXPECT_NE(wrong->err.find(absl::StrCat("holds the server of PostgreSQL ", major == 15 ? 16 : 15,
                                         ", but this needs PostgreSQL ", major)),
            std::string::npos)
      << wrong->err;
  for (const Case& k : std::vector<Case>{{"at-time", {"--time", states.time1}, states.sum1},
                                         {"at-lsn", {"--lsn", states.lsn2}, states.sum2},
                                         {"latest", {"--latest", "--pg-bin", *bin}, s3}}) {
    std::unique_ptr<local::LocalPostgres> restored = RestoreStarted(c, k.name, k.target);
    ASSERT_NE(restored, nullptr) << k.name;
    EXPECT_EQ(restored->major(), major);
    EXPECT_EQ(Q(*restored, kSumOfT), k.sum) << "PostgreSQL " << major << ", " << k.name;
    if (k.name == "latest") {
      EXPECT_EQ(TableChecksums(*restored), pgbench) << "PostgreSQL " << major;
    }
  }
  auto drill = RunFerrySucceeding({"drill", "--config", c.config, "--json"}, "drill");
  ASSERT_TRUE(drill);
  EXPECT_NE(drill->out.find("\"ok\":true"), std::string::npos) << drill->out;
  EXPECT_NE(drill->out.find("\"check\":\"pg_amcheck\",\"ok\":true"), std::string::npos) << drill->out;
}

// A field of `ferry backup --json` output.
std::string JsonField(const std::string& json, const std::string& key) {
  const std::string k = absl::StrCat("\"", key, "\":");
  const size_t at = json.find(k);
  if (at == std::string::npos) return "";
  size_t from = at + k.size();
  if (json[from] == '"') return json.substr(from + 1, json.find('"', from + 1) - from - 1);
  return json.substr(from, json.find_first_of(",}", from) - from);
}

class BlockIncrementalTest : public ::testing::TestWithParam<int> {};

// 17+ with summarize_wal: the second and third backups are PostgreSQL's own block increments
// (the server sends a fraction of the cluster), each stored whole, so that a restore from the
// last one, recovered by the server itself, equals the primary; verify and a drill
// (pg_amcheck) pass on the rebuilt files.
TEST_P(BlockIncrementalTest, ChainRestoresEqualToThePrimary) {
  const int major = GetParam();
  Cluster c = StartCluster("io_uring", {"summarize_wal = on"}, major);
  ASSERT_NE(c.pg, nullptr);
  Pgbench(*c.pg, {"-i", "-s", "5", "-q"});
  Q(*c.pg, "create table gone as select g from generate_series(1, 100000) g");
  auto backup = [&] {
    auto r = RunFerrySucceeding({"backup", "--config", c.config, "--source", "main", "--json"}, "backup");
    return r ? r->out : std::string();
  };
  const std::string full = backup();
  ASSERT_EQ(JsonField(full, "increment_of"), "") << full;
  // A few hundred transactions: each changes a block or two of each table.
  Pgbench(*c.pg, {"-t", "200", "-c", "2"});
  const std::string first = backup();
  Pgbench(*c.pg, {"-t", "200", "-c", "2"});
  Q(*c.pg, "create table later as select g from generate_series(1, 1000) g");
  Q(*c.pg, "drop table gone");
  const std::string second = backup();
  EXPECT_EQ(JsonField(first, "increment_of"), JsonField(full, "id")) << first;
  EXPECT_EQ(JsonField(second, "increment_of"), JsonField(first, "id")) << second;
  uint64_t full_bytes = 0, first_bytes = 0, second_bytes = 0;
  ASSERT_TRUE(absl::SimpleAtoi(JsonField(full, "received_bytes"), &full_bytes)) << full;
  ASSERT_TRUE(absl::SimpleAtoi(JsonField(first, "received_bytes"), &first_bytes)) << first;
  ASSERT_TRUE(absl::SimpleAtoi(JsonField(second, "received_bytes"), &second_bytes)) << second;
  EXPECT_LT(first_bytes * 4, full_bytes) << "the server sent " << first_bytes << " of " << full_bytes;
  EXPECT_LT(second_bytes * 4, full_bytes) << "the server sent " << second_bytes << " of " << full_bytes;
  Pgbench(*c.pg, {"-t", "200", "-c", "2"});
  WaitUntilArchived(*c.pg);
  const std::string sums = Q(*c.pg, "select count(*), sum(abalance), sum(bid) from pgbench_accounts") +
                           Q(*c.pg, "select count(*) from later");
  const std::string pgbench = TableChecksums(*c.pg);
  EXPECT_TRUE(RunFerrySucceeding({"verify", "--archive", c.archive}, "verify"));
  ASSERT_TRUE(c.ferry->Terminate().ok());
  {
    std::unique_ptr<local::LocalPostgres> restored = RestoreStarted(c, "latest", {"--latest"});
    ASSERT_NE(restored, nullptr);
    EXPECT_EQ(Q(*restored, "select count(*), sum(abalance), sum(bid) from pgbench_accounts") +
                  Q(*restored, "select count(*) from later"),
              sums);
    EXPECT_EQ(Q(*restored, "select count(*) from pg_class where relname = 'gone'"), "0");
    EXPECT_EQ(TableChecksums(*restored), pgbench);
  }
  auto drill = RunFerrySucceeding({"drill", "--config", c.config, "--json"}, "drill");
  ASSERT_TRUE(drill);
  EXPECT_NE(drill->out.find("\"check\":\"pg_amcheck\",\"ok\":true"), std::string::npos) << drill->out;
}

INSTANTIATE_TEST_SUITE_P(Majors, BlockIncrementalTest, ::testing::Values(17, 18),
                         [](const ::testing::TestParamInfo<int>& info) { return absl::StrCat("PostgreSQL", info.param); });

// pg_upgrade (here: a new cluster of the next major) under an archive that holds the old
// major's history: ferry names the upgrade and what to do, and stores nothing of it.
TEST(PgVersionsUpgradeTest, AMajorUpgradeUnderAnArchiveIsNamed) {
  Cluster c = StartCluster("posix", {}, 16);
  ASSERT_NE(c.pg, nullptr);
  ASSERT_TRUE(c.ferry->Terminate().ok());
  local::LocalPostgresOptions o;
  o.major = 17;
  auto upgraded = local::LocalPostgres::Create(o);
  ASSERT_TRUE(upgraded.ok()) << upgraded.status();
  std::filesystem::create_directories(c.dir + "/upgraded");
  const std::string config = WriteConfig(c.dir + "/upgraded", c.archive, (*upgraded)->Conninfo(), "posix");
  auto backup = RunFerry({"backup", "--config", config, "--source", "main"});
  ASSERT_TRUE(backup.ok()) << backup.status();
  EXPECT_EQ(backup->exit_code, 1);
  EXPECT_NE(backup->err.find("the server is now PostgreSQL 17"), std::string::npos) << backup->err;
  EXPECT_NE(backup->err.find("but the archive holds PostgreSQL 16's history"), std::string::npos) << backup->err;
  EXPECT_NE(backup->err.find("Give the source a new name"), std::string::npos) << backup->err;
}

// `ferry sandbox --pg-bin` runs the whole sandbox (load, mirror, restores, drill) on the
// newest major.
TEST(PgVersionsSandboxTest, SandboxPassesOnTheNewestMajor) {
  auto bin = local::PgServerBinDir(client::pg::kNewestMajor);
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto sandbox = RunFerry({"sandbox", "--seconds", "5", "--pg-bin", *bin});
  ASSERT_TRUE(sandbox.ok()) << sandbox.status();
  EXPECT_EQ(sandbox->exit_code, 0) << sandbox->out << sandbox->err;
  EXPECT_NE(sandbox->out.find(absl::StrCat("sandbox: PostgreSQL ", client::pg::kNewestMajor, " on")), std::string::npos)
      << sandbox->out;
  EXPECT_NE(sandbox->out.find("drill passed"), std::string::npos) << sandbox->out;
  EXPECT_NE(sandbox->out.find("sandbox: ok"), std::string::npos) << sandbox->out;
}

INSTANTIATE_TEST_SUITE_P(Majors, PgVersionsTest, ::testing::Values(14, 16, 17, 18),
                         [](const ::testing::TestParamInfo<int>& info) { return absl::StrCat("PostgreSQL", info.param); });

}  // namespace
}  // namespace ferry::testing
