// Operating the service: the archive's file system fills up (a small tmpfs the test mounts)
// and ferry stops acknowledging — a synchronous commit waits, /healthz says why — then space
// returns and everything resumes without loss.
#include <sys/stat.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "local/local_postgres.h"
#include "local/local_redis.h"
#include "local/process.h"
#include "tests/fixtures/ferry_process.h"
#include "tests/fixtures/pg_cluster.h"

namespace ferry::testing {
namespace {

using local::LocalPostgres;

double FreeFraction(const std::string& path) {
  struct statvfs fs;
  if (statvfs(path.c_str(), &fs) != 0 || fs.f_blocks == 0) return -1;
  return static_cast<double>(fs.f_bavail) / static_cast<double>(fs.f_blocks);
}

TEST(DiskGuardTest, FullArchiveFileSystemStopsAcksAndSpaceResumesThem) {
  auto dir = local::MakeTempDir("ferry-disk-test");
  ASSERT_TRUE(dir.ok());
  const std::string fs_dir = *dir + "/fs";
  std::filesystem::create_directories(fs_dir);
  // A file system of its own, small enough to fill: the test runs as root in CI.
  ASSERT_EQ(mount("tmpfs", fs_dir.c_str(), "tmpfs", 0, "size=64m"), 0)
      << "mount tmpfs on " << fs_dir << ": " << std::strerror(errno) << " (the test needs root)";
  struct Unmount {
    std::string fs;
    ~Unmount() { umount2(fs.c_str(), MNT_DETACH); }
  } unmount{fs_dir};
  const std::string archive = fs_dir + "/archive";
  MakeArchiveDir(archive);

  auto pg = LocalPostgres::Create({.settings = {"synchronous_standby_names = 'ferry_main'"}});
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto port = local::FindFreeLoopbackPort();
  ASSERT_TRUE(port.ok());
  const std::string config = *dir + "/ferry.toml";
  std::ofstream(config) << "[archive]\npath = \"" << archive << "\"\nwriter = \"posix\"\nsegment_mb = 1\n"
                        << "min_free_percent = 30\n\n[http]\nlisten = \"127.0.0.1:" << *port << "\"\n\n"
                        << "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"" << (*pg)->Conninfo()
                        << "\"\nscheduled_backups = false\n";
  FerryService ferry(config, *dir + "/ferry.log");
  ASSERT_TRUE(ferry.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return FerryFlush(**pg).valid(); }, 30)) << ferry.Log();
  Q(**pg, "create table t (id int)");
  Q(**pg, "insert into t values (1)");  // a synchronous commit: ferry acknowledges it
  httplib::Client http("127.0.0.1", *port);
  auto healthz = [&] {
    auto r = http.Get("/healthz");
    return r ? std::make_pair(r->status, r->body) : std::make_pair(0, std::string());
  };
  ASSERT_EQ(healthz().first, 200) << healthz().second << ferry.Log();

  // Fill the file system until less than 20 % is free (the guard holds under 30 %).
  const std::string filler = fs_dir + "/filler";
  {
    std::ofstream f(filler, std::ios::binary);
    const std::string block(1 << 20, 'f');
    while (FreeFraction(fs_dir) > 0.2) f.write(block.data(), block.size()), f.flush();
  }
  ASSERT_TRUE(WaitFor([&] { return healthz().first == 503; }, 10)) << ferry.Log();
  EXPECT_NE(healthz().second.find("archive file system"), std::string::npos) << healthz().second;
  EXPECT_NE(ferry.Log().find("event=disk_low"), std::string::npos) << ferry.Log();

  // A synchronous commit now waits: ferry does not acknowledge what it cannot make durable.
  const pipeline::Lsn flushed_before = FerryFlush(**pg);
  auto commit = std::async(std::launch::async, [&] { return (*pg)->Query("insert into t values (2)"); });
  EXPECT_EQ(commit.wait_for(std::chrono::seconds(3)), std::future_status::timeout);
  EXPECT_EQ(FerryFlush(**pg).value(), flushed_before.value());

  // Space returns: the commit completes, health is back, nothing was lost.
  std::filesystem::remove(filler);
  ASSERT_EQ(commit.wait_for(std::chrono::seconds(30)), std::future_status::ready) << ferry.Log();
  EXPECT_TRUE(commit.get().ok());
  EXPECT_TRUE(WaitFor([&] { return healthz().first == 200; }, 10)) << healthz().second;
  EXPECT_NE(ferry.Log().find("event=disk_ok"), std::string::npos) << ferry.Log();
  WaitUntilArchived(**pg);
  auto exit_code = ferry.Terminate();
  ASSERT_TRUE(exit_code.ok() && *exit_code == 0) << ferry.Log();
  auto verify = RunFerrySucceeding({"verify", "--archive", archive}, "verify");
  ASSERT_TRUE(verify);
}

// PostgreSQL stops: /healthz is 503 naming it within 10 s, the error by code shows in
// /metrics; it restarts (same data directory and port): 200 again, streaming on. The
// endpoint requires the bearer token of [http] token_file.
TEST(PgHealthTest, ServerStopIsUnhealthyWithinTenSecondsAndRestartHeals) {
  auto dir = local::MakeTempDir("ferry-pghealth-test");
  ASSERT_TRUE(dir.ok());
  auto pg = LocalPostgres::Create({});
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto port = local::FindFreeLoopbackPort();
  ASSERT_TRUE(port.ok());
  const std::string config = *dir + "/ferry.toml";
  std::ofstream(*dir + "/token") << "s3cret-token\n";
  ASSERT_EQ(chmod((*dir + "/token").c_str(), 0600), 0);  // a secret others can read is refused
  MakeArchiveDir(*dir + "/archive");
  std::ofstream(config) << "[archive]\npath = \"" << *dir << "/archive\"\n\n[http]\nlisten = \"127.0.0.1:" << *port
                        << "\"\ntoken_file = \"" << *dir << "/token\"\n\n[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"" << (*pg)->Conninfo()
                        << "\"\nscheduled_backups = false\n";
  FerryService ferry(config, *dir + "/ferry.log");
  ASSERT_TRUE(ferry.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return FerryFlush(**pg).valid(); }, 30)) << ferry.Log();
  httplib::Client anonymous("127.0.0.1", *port);
  auto refused = anonymous.Get("/metrics");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);  // a token_file makes the endpoint require it
  httplib::Client http("127.0.0.1", *port);
  http.set_bearer_token_auth("s3cret-token");
  auto status = [&] {
    auto r = http.Get("/healthz");
    return r ? r->status : 0;
  };
  ASSERT_EQ(status(), 200) << ferry.Log();
  EXPECT_TRUE(RunFerrySucceeding({"status", "--config", config}, "ferry status with the token"));

  const int pg_port = (*pg)->port();
  ASSERT_TRUE((*pg)->Stop().ok());
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return status() == 503; }, 10)) << ferry.Log();
  EXPECT_LE(std::chrono::steady_clock::now() - stopped, std::chrono::seconds(10));
  auto r = http.Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("source main down"), std::string::npos) << r->body;
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("ferry_errors_total{source=\"main\",kind=\"postgres\",code=\"UNAVAILABLE\"}"),
            std::string::npos)
      << metrics->body;

  auto again = LocalPostgres::StartExisting((*pg)->data_dir(), pg_port);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(WaitFor([&] { return status() == 200; }, 60)) << ferry.Log();
  Q(**again, "select pg_switch_wal()");
  WaitUntilArchived(**again);
  auto exit_code = ferry.Terminate();
  ASSERT_TRUE(exit_code.ok() && *exit_code == 0) << ferry.Log();
  again->reset();  // stop it before the original object removes the data directory
}

// SIGHUP adds a source (it starts streaming) and removes it (its replica connection goes)
// while the other source streams on; SIGTERM under load exits 0 and the slot never
// claims more than the archive holds.
TEST(ReloadTest, SighupAddsAndRemovesSourcesAndSigtermUnderLoadExitsZero) {
  auto dir = local::MakeTempDir("ferry-reload-test");
  ASSERT_TRUE(dir.ok());
  auto pg = LocalPostgres::Create({});
  ASSERT_TRUE(pg.ok()) << pg.status();
  local::LocalRedisOptions ro;
  ro.args = {"--repl-diskless-sync-delay", "0"};
  auto redis = local::LocalRedis::Start(ro);
  ASSERT_TRUE(redis.ok()) << redis.status();
  const std::string archive = *dir + "/archive";
  MakeArchiveDir(archive);
  const std::string config = *dir + "/ferry.toml";
  auto write_config = [&](bool with_redis) {
    std::ofstream out(config);
    out << "[archive]\npath = \"" << archive << "\"\n\n[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \""
        << (*pg)->Conninfo() << "\"\nscheduled_backups = false\n";
    if (with_redis) {
      out << "\n[[source]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"" << (*redis)->Address()
          << "\"\nscheduled_backups = false\n";
    }
  };
  write_config(false);
  FerryService ferry(config, *dir + "/ferry.log");
  ASSERT_TRUE(ferry.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return FerryFlush(**pg).valid(); }, 30)) << ferry.Log();

  write_config(true);
  ferry.Signal(SIGHUP);
  EXPECT_TRUE(local::WaitReplicaAcked(**redis, 30).ok()) << ferry.Log();
  EXPECT_NE(ferry.Log().find("source=cache event=reload action=start"), std::string::npos) << ferry.Log();
  Q(**pg, "create table t (id int)");
  WaitUntilArchived(**pg);

  write_config(false);
  ferry.Signal(SIGHUP);
  EXPECT_TRUE(WaitFor([&] { return (*redis)->Command({"INFO", "replication"}).value_or("").find("connected_slaves:0") !=
                                   std::string::npos; }, 30)) << ferry.Log();
  Q(**pg, "insert into t values (1)");
  WaitUntilArchived(**pg);  // main streamed on through both reloads
  EXPECT_EQ(ferry.Log().find("source=main event=reload"), std::string::npos) << ferry.Log();

  // SIGTERM while pgbench writes: a clean exit, and the slot's flush position is archived.
  Pgbench(**pg, {"-i", "-s", "1", "-q"});
  std::thread load([&] { Pgbench(**pg, {"-T", "4", "-c", "2"}); });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto exit_code = ferry.Terminate();
  load.join();
  ASSERT_TRUE(exit_code.ok());
  EXPECT_EQ(*exit_code, 0) << ferry.Log();
  auto slot = pipeline::Lsn::Parse(Q(**pg, "select restart_lsn from pg_replication_slots where slot_name = 'ferry_main'"));
  ASSERT_TRUE(slot.ok());
  auto end = pipeline::Lsn::Parse(ArchiveEnd(archive, "main", "pg-wal"));
  ASSERT_TRUE(end.ok());
  EXPECT_LE(slot->value(), end->value()) << "acknowledged " << slot->ToString() << " but archived only " << end->ToString();
}

}  // namespace
}  // namespace ferry::testing
