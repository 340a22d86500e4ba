// LocalPostgres against a real PostgreSQL 15: create, query, replication protocol, crash
// (SIGKILL) and restart, and starting a pg_basebackup copy. No server installed is a failure.
#include "local/local_postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ferry::local {
namespace {

std::unique_ptr<LocalPostgres> StartServer(const LocalPostgresOptions& options = {}) {
  auto pg = LocalPostgres::Create(options);
  // A missing PostgreSQL is a failed setup, never a skip.
  EXPECT_TRUE(pg.ok()) << pg.status();
  return pg.ok() ? std::move(*pg) : nullptr;
}

std::string Q(const LocalPostgres& pg, const std::string& sql) {
  auto r = pg.Query(sql);
  EXPECT_TRUE(r.ok()) << sql << ": " << r.status();
  return r.ok() ? *r : "<error>";
}

// A temp dir the postgres user may write into, removed at the end of the test.
class ScratchDir {
 public:
  ScratchDir() {
    auto dir = MakeTempDir("ferry-lp-test");
    EXPECT_TRUE(dir.ok()) << dir.status();
    if (dir.ok()) path_ = *dir;
    absl::Status st = GiveToServerUser(path_);
    EXPECT_TRUE(st.ok()) << st;
  }
  ~ScratchDir() {
    const char* keep = std::getenv("FERRY_KEEP_TEST_DIRS");
    if (!path_.empty() && !(keep != nullptr && std::string(keep) == "1")) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(LocalPostgresTest, CreateStartsAServerWithFerrysDefaultsAndSettings) {
  LocalPostgresOptions options;
  options.settings = {"work_mem = '7MB'"};
  std::unique_ptr<LocalPostgres> pg = StartServer(options);
  ASSERT_NE(pg, nullptr);
  EXPECT_GT(pg->port(), 0);
  EXPECT_TRUE(PortAcceptsConnections(pg->port()));
  EXPECT_TRUE(std::filesystem::exists(pg->data_dir() + "/PG_VERSION"));
  EXPECT_EQ(Q(*pg, "select 1"), "1");
  EXPECT_EQ(Q(*pg, "show wal_level"), "logical");
  EXPECT_EQ(Q(*pg, "show fsync"), "on");
  EXPECT_EQ(Q(*pg, "show max_replication_slots"), "10");
  EXPECT_EQ(Q(*pg, "show listen_addresses"), "127.0.0.1");
  EXPECT_EQ(Q(*pg, "show unix_socket_directories"), pg->socket_dir());
  EXPECT_EQ(Q(*pg, "show work_mem"), "7MB");
  EXPECT_EQ(Q(*pg, "show server_version_num").substr(0, 2), "15");
  // Rows come back one per line, columns separated by '|'; command tags are not printed.
  EXPECT_EQ(Q(*pg, "create table t (a int, b text); insert into t values (1, 'x'), (2, 'y'); "
                   "select * from t order by a"),
            "1|x\n2|y");
  EXPECT_EQ(pg->Conninfo(), absl::StrCat("host=127.0.0.1 port=", pg->port(), " user=postgres dbname=postgres"));
}

TEST(LocalPostgresTest, QueryErrorsAreOneLineAndNameTheProblem) {
  std::unique_ptr<LocalPostgres> pg = StartServer();
  ASSERT_NE(pg, nullptr);
  auto r = pg->Query("select * from no_such_table");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "no_such_table")) << r.status();
  EXPECT_FALSE(absl::StrContains(r.status().message(), "\n")) << r.status();

  auto in_other_db = pg->Query("select 1", "no_such_db");
  ASSERT_FALSE(in_other_db.ok());
  EXPECT_EQ(in_other_db.status().code(), absl::StatusCode::kUnavailable) << in_other_db.status();
  EXPECT_TRUE(absl::StrContains(in_other_db.status().message(), "no_such_db")) << in_other_db.status();
}

TEST(LocalPostgresTest, ReplicationConnectionsAreAccepted) {
  std::unique_ptr<LocalPostgres> pg = StartServer();
  ASSERT_NE(pg, nullptr);
  const std::string replication = pg->Conninfo() + " replication=true";
  auto identify = pg->RunTool({"psql", "-X", "-At", "-d", replication, "-c", "IDENTIFY_SYSTEM"});
  ASSERT_TRUE(identify.ok()) << identify.status();
  ASSERT_EQ(identify->exit_code, 0) << identify->err;
  // systemid|timeline|xlogpos|dbname
  EXPECT_TRUE(absl::StrContains(identify->out, Q(*pg, "select system_identifier from pg_control_system()")))
      << identify->out;

  auto slot = pg->RunTool({"psql", "-X", "-At", "-d", replication, "-c", "CREATE_REPLICATION_SLOT s1 PHYSICAL"});
  ASSERT_TRUE(slot.ok()) << slot.status();
  ASSERT_EQ(slot->exit_code, 0) << slot->err;
  EXPECT_EQ(Q(*pg, "select slot_name || ' ' || slot_type from pg_replication_slots"), "s1 physical");
  EXPECT_EQ(Q(*pg, "select count(*) from pg_stat_replication"), "0");
}

TEST(LocalPostgresTest, KillClosesThePortAndTheDataDirRecovers) {
  std::unique_ptr<LocalPostgres> pg = StartServer();
  ASSERT_NE(pg, nullptr);
  Q(*pg, "create table t as select g from generate_series(1, 1000) g");
  const int port = pg->port();

  absl::Status killed = pg->Kill();
  ASSERT_TRUE(killed.ok()) << killed;
  EXPECT_FALSE(PortAcceptsConnections(port));
  auto after = pg->Query("select 1");
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable) << after.status();
  // As after a real crash, postmaster.pid stays behind, naming a dead process.
  EXPECT_TRUE(std::filesystem::exists(pg->data_dir() + "/postmaster.pid"));

  auto restarted = LocalPostgres::StartExisting(pg->data_dir());
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_EQ(Q(**restarted, "select count(*) from t"), "1000");
  std::ifstream log((*restarted)->log_path());
  std::stringstream text;
  text << log.rdbuf();
  EXPECT_TRUE(absl::StrContains(text.str(), "not properly shut down")) << "no crash recovery in the log:\n" << text.str();
}

TEST(LocalPostgresTest, StartExistingRefusesADataDirInUse) {
  std::unique_ptr<LocalPostgres> pg = StartServer();
  ASSERT_NE(pg, nullptr);
  auto second = LocalPostgres::StartExisting(pg->data_dir());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), "already in use")) << second.status();
  EXPECT_EQ(Q(*pg, "select 1"), "1");
}

TEST(LocalPostgresTest, StartExistingRunsABaseBackupCopyWithTheSameData) {
  std::unique_ptr<LocalPostgres> pg = StartServer();
  ASSERT_NE(pg, nullptr);
  Q(*pg, "create table t (id int primary key, v text); "
         "insert into t select g, md5(g::text) from generate_series(1, 5000) g");
  const std::string sum = Q(*pg, "select count(*) || ':' || md5(string_agg(v, ',' order by id)) from t");

  ScratchDir scratch;
  ASSERT_FALSE(scratch.path().empty());
  const std::string copy = scratch.path() + "/copy";
  auto backup = pg->RunTool({"pg_basebackup", "-D", copy, "-X", "stream", "--checkpoint=fast", "--no-sync"});
  ASSERT_TRUE(backup.ok()) << backup.status();
  ASSERT_EQ(backup->exit_code, 0) << backup->err;

  auto started = LocalPostgres::StartExisting(copy);
  ASSERT_TRUE(started.ok()) << started.status();
  LocalPostgres& clone = **started;
  EXPECT_NE(clone.port(), pg->port());
  EXPECT_EQ(Q(clone, "select pg_is_in_recovery()"), "f");
  EXPECT_EQ(Q(clone, "select count(*) || ':' || md5(string_agg(v, ',' order by id)) from t"), sum);
  // Two independent servers now: a write to one is not in the other.
  Q(clone, "insert into t values (5001, 'clone only')");
  EXPECT_EQ(Q(*pg, "select count(*) from t"), "5000");
  EXPECT_EQ(Q(clone, "select count(*) from t"), "5001");

  absl::Status stopped = clone.Stop();
  EXPECT_TRUE(stopped.ok()) << stopped;
  EXPECT_FALSE(PortAcceptsConnections(clone.port()));
  EXPECT_FALSE(std::filesystem::exists(copy + "/postmaster.pid"));
}

}  // namespace
}  // namespace ferry::local
