// Base backups into the archive and point-in-time restore against a real PostgreSQL 15:
// restores to times, an LSN and an xid equal what the primary had; a second backup of an
// unchanged database stores almost nothing and materialises byte-identical
// (pg_verifybackup); unreachable targets fail before anything is written.
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "local/local_postgres.h"
#include "tests/fixtures/pg_cluster.h"

namespace ferry::testing {
namespace {

using local::LocalPostgres;

// The "new_stored_bytes" of `ferry backup --json` output.
uint64_t NewBytes(const std::string& json) {
  const std::string key = "\"new_stored_bytes\":";
  const size_t at = json.find(key);
  uint64_t v = 0;
  EXPECT_NE(at, std::string::npos) << json;
  if (at != std::string::npos) {
    EXPECT_TRUE(absl::SimpleAtoi(json.substr(at + key.size(), json.find('}', at) - at - key.size()), &v));
  }
  return v;
}

local::CommandResult Backup(const Cluster& c) {
  auto r = RunFerry({"backup", "--config", c.config, "--source", "main", "--json"});
  EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->err;
  return r.value_or(local::CommandResult{});
}

// `ferry restore postgres ... --start` into dir/name; returns the table checksum reached.
std::string RestoreAndSum(const Cluster& c, const std::string& name, const std::vector<std::string>& target) {
  std::string out;
  std::unique_ptr<LocalPostgres> restored = RestoreStarted(c, name, target, &out);
  if (restored == nullptr) return "";
  EXPECT_NE(out.find("recovered: last replayed commit at"), std::string::npos) << out;
  const std::string sum = Q(*restored, kSumOfT);
  EXPECT_TRUE(restored->Stop().ok());
  // recovery_end_command removed wal-fetch's decompress-ahead spool.
  EXPECT_FALSE(std::filesystem::exists(c.dir + "/" + name + "/pg_wal/.ferry-prefetch")) << name;
  return sum;
}

TEST(PitrTest, BackupsDedupAndRestoreToTimesLsnAndXid) {
  Cluster c = StartCluster("io_uring");
  ASSERT_NE(c.pg, nullptr);
  Pgbench(*c.pg, {"-i", "-s", "13", "-q"});  // ~200 MB
  Q(*c.pg, "create table t (id int primary key, v text)");
  Q(*c.pg, "vacuum freeze");
  Q(*c.pg, "checkpoint");

  const auto first = Backup(c);
  const auto second = Backup(c);
  const uint64_t first_bytes = NewBytes(first.out), second_bytes = NewBytes(second.out);
  ASSERT_GT(first_bytes, 0u);
  EXPECT_LT(second_bytes * 20, first_bytes)
      << "the second backup of an unchanged database stored " << second_bytes << " of " << first_bytes;

  // The workload: states S1 < S2 < S3, with commits after each so recovery can stop there.
  const TwoStates states = WriteTwoStates(*c.pg);
  const std::string &s1 = states.sum1, &t1 = states.time1, &s2 = states.sum2, &lsn2 = states.lsn2;
  usleep(200000);
  const std::string t2 = ServerNow(*c.pg);
  usleep(200000);
  const std::string xid3 = Q(*c.pg, "begin; delete from t where id > 900; select txid_current(); commit;");
  const std::string s3 = Q(*c.pg, kSumOfT);
  usleep(200000);
  const std::string t3 = ServerNow(*c.pg);
  usleep(200000);
  Q(*c.pg, "insert into t values (5000, 'after')");
  Q(*c.pg, "select pg_switch_wal()");
  WaitUntilArchived(*c.pg);
  ASSERT_NE(s1, s2);
  ASSERT_NE(s2, s3);

  // The second backup, materialised, is what PostgreSQL's own manifest says it is.
  {
    const std::string to = c.dir + "/verify";
    auto r = RunFerry({"restore", "postgres", "--archive", c.archive, "--source", "main", "--latest", "--to", to});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->exit_code, 0) << r->err;
    ASSERT_TRUE(local::GiveToServerUser(to).ok());
    auto v = c.pg->RunTool({"pg_verifybackup", "-n", to});
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->exit_code, 0) << v->out << v->err;
  }

  EXPECT_EQ(RestoreAndSum(c, "at-t1", {"--time", t1}), s1);
  EXPECT_EQ(RestoreAndSum(c, "at-t2", {"--time", t2}), s2);
  EXPECT_EQ(RestoreAndSum(c, "at-lsn", {"--lsn", lsn2}), s2);
  EXPECT_EQ(RestoreAndSum(c, "at-xid", {"--xid", xid3}), s3);
  EXPECT_EQ(RestoreAndSum(c, "at-t3", {"--time", t3}), s3);

  // Unreachable targets: one line naming the problem, exit 1, nothing written.
  struct Bad {
    std::vector<std::string> target;
    std::string says;
  };
  for (const Bad& bad : std::vector<Bad>{
           {{"--time", "2099-01-01T00:00:00Z"}, "after the latest synced commit"},
           {{"--time", "2001-01-01T00:00:00Z"}, "before the restorable window"},
           {{"--xid", "4000000000"}, "has no commit record"},
           {{"--lsn", "FF/0"}, "end of the archived WAL"}}) {
    const std::string to = c.dir + "/bad";
    std::vector<std::string> args = {"restore", "postgres", "--archive", c.archive,
                                     "--source", "main", "--to", to};
    args.insert(args.end(), bad.target.begin(), bad.target.end());
    auto r = RunFerry(args);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->exit_code, 1) << r->out << r->err;
    EXPECT_NE(r->err.find(bad.says), std::string::npos) << r->err;
    EXPECT_EQ(std::count(r->err.begin(), r->err.end(), '\n'), 1) << r->err;
    EXPECT_FALSE(std::filesystem::exists(to)) << bad.says;
  }
  auto nonempty = RunFerry({"restore", "postgres", "--archive", c.archive, "--source", "main",
                            "--latest", "--to", c.dir + "/at-t1"});
  ASSERT_TRUE(nonempty.ok());
  EXPECT_EQ(nonempty->exit_code, 1);
  EXPECT_NE(nonempty->err.find("is not empty"), std::string::npos) << nonempty->err;

  // ls shows both snapshots and a window that ends at the last commit.
  auto ls = RunFerry({"ls", "--archive", c.archive, "--json"});
  ASSERT_TRUE(ls.ok());
  EXPECT_NE(ls->out.find("\"snapshots\":[{"), std::string::npos) << ls->out;
  EXPECT_NE(ls->out.find("\"restorable\":{\"earliest\""), std::string::npos) << ls->out;
  auto verify = RunFerry({"verify", "--archive", c.archive});
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->exit_code, 0) << verify->out << verify->err;

  // Enough poorly compressible WAL for several archive segments, then take one out of the
  // middle: a missing piece of WAL inside the window is named, and nothing is written.
  Q(*c.pg, "create table junk as select g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) "
           "from generate_series(1, 400000) g");
  WaitUntilArchived(*c.pg);
  ASSERT_TRUE(c.ferry->Terminate().ok());
  std::vector<std::filesystem::path> segs;
  for (const auto& e : std::filesystem::directory_iterator(c.archive + "/streams/main/pg-wal")) {
    if (e.path().extension() == ".seg") segs.push_back(e.path());
  }
  std::sort(segs.begin(), segs.end());
  ASSERT_GE(segs.size(), 3u);
  const auto victim = segs[segs.size() - 2];
  std::filesystem::remove(victim);
  std::filesystem::path idx = victim;
  std::filesystem::remove(idx.replace_extension(".idx"));
  auto gap = RunFerry({"restore", "postgres", "--archive", c.archive, "--source", "main",
                       "--latest", "--to", c.dir + "/gap"});
  ASSERT_TRUE(gap.ok());
  EXPECT_EQ(gap->exit_code, 1) << gap->out;
  EXPECT_NE(gap->err.find("has no WAL from"), std::string::npos) << gap->err;
  EXPECT_FALSE(std::filesystem::exists(c.dir + "/gap"));
}

// Retention with second-long durations: the older backup and the WAL only it needed go, the
// newest backup stays restorable to the end, and a time before it is now out of the window.
TEST(PitrTest, RetentionExpiresWhatNoKeptBackupNeeds) {
  Cluster c = StartCluster("posix");
  ASSERT_NE(c.pg, nullptr);
  c.config = WriteConfig(c.dir, c.archive, c.pg->Conninfo(), "posix",
                         "scheduled_backups = false\n[retention]\nfull = \"1s\"\n"
                         "incremental = \"1s\"\nwal = \"1s\"\n");
  Q(*c.pg, "create table t (id int primary key, v text)");
  Q(*c.pg, "insert into t select g, 'a' from generate_series(1, 1000) g");
  Backup(c);
  const std::string before_second = ServerNow(*c.pg);
  // WAL that only the first backup needs, spread over several archive segments.
  Q(*c.pg, "create table junk as select g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) "
           "from generate_series(1, 400000) g");
  Q(*c.pg, "checkpoint");
  WaitUntilArchived(*c.pg);
  sleep(2);
  const std::string second = Backup(c).out;
  Q(*c.pg, "update t set v = 'b' where id <= 10");
  const std::string sum = Q(*c.pg, kSumOfT);
  Q(*c.pg, "select pg_switch_wal()");
  WaitUntilArchived(*c.pg);
  sleep(2);

  const std::string wal_dir = c.archive + "/streams/main/pg-wal";
  auto count_segs = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(wal_dir)) n += e.path().extension() == ".seg";
    return n;
  };
  const int segs_before = count_segs();
  auto dry = RunFerry({"retention", "--config", c.config, "--dry-run"});
  ASSERT_TRUE(dry.ok());
  ASSERT_EQ(dry->exit_code, 0) << dry->err;
  EXPECT_NE(dry->out.find("would delete snapshot"), std::string::npos) << dry->out;
  EXPECT_EQ(count_segs(), segs_before) << "a dry run deletes nothing";

  auto run = RunFerry({"retention", "--config", c.config});
  ASSERT_TRUE(run.ok());
  ASSERT_EQ(run->exit_code, 0) << run->err;
  EXPECT_NE(run->out.find("deleted snapshot"), std::string::npos) << run->out;
  EXPECT_NE(run->out.find(".seg"), std::string::npos) << "old WAL should go: " << run->out;
  EXPECT_LT(count_segs(), segs_before);
  auto ls = RunFerry({"ls", "--archive", c.archive, "--json"});
  ASSERT_TRUE(ls.ok());
  EXPECT_EQ(ls->out.find("\"id\":", ls->out.find("\"id\":") + 1), std::string::npos)
      << "one snapshot should remain: " << ls->out;
  auto verify = RunFerry({"verify", "--archive", c.archive});
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->exit_code, 0) << verify->out << verify->err;

  auto early = RunFerry({"restore", "postgres", "--archive", c.archive, "--source", "main", "--time",
                         before_second, "--to", c.dir + "/early"});
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early->exit_code, 1);
  EXPECT_NE(early->err.find("before the restorable window"), std::string::npos) << early->err;
  EXPECT_EQ(RestoreAndSum(c, "latest", {"--latest"}), sum);
}

}  // namespace
}  // namespace ferry::testing
