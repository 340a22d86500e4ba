// Network faults and TLS between ferry and PostgreSQL.
//
// Network faults between ferry and PostgreSQL, through a TCP relay the test controls: cut
// connections, and a stalled one (a black hole: to ferry the server just stops sending).
// ferry notices each (the stall by the server's wal_sender_timeout: it asks for a reply at
// half of it and gives up at all of it), reconnects with backoff, and loses nothing: the
// archive verifies and ends where the primary's WAL does. (A server killed and restarted
// mid-stream: service_ops_test.cc.)
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "local/local_postgres.h"
#include "local/process.h"
#include "pipeline/position.h"
#include "tests/fixtures/ferry_process.h"
#include "tests/fixtures/pg_cluster.h"
#include "tests/fixtures/tcp_relay.h"

namespace ferry::testing {
namespace {

using pipeline::Lsn;
using local::LocalPostgres;

int Count(const std::string& log, const std::string& needle) {
  int n = 0;
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
  return n;
}

TEST(NetworkFaultsTest, CutAndStalledConnectionsReconnectWithoutLoss) {
  local::LocalPostgresOptions o;
  o.settings = {"wal_sender_timeout = '2s'"};
  auto pg = LocalPostgres::Create(o);
  ASSERT_TRUE(pg.ok()) << pg.status();
  TcpRelay relay((*pg)->port());
  auto dir = local::MakeTempDir("ferry-net-test");
  ASSERT_TRUE(dir.ok());
  const std::string archive = *dir + "/archive";
  const std::string conninfo = absl::StrCat("host=127.0.0.1 port=", relay.port(), " user=postgres dbname=postgres");
  // Both streams of the source go through the relay: the WAL and the change events.
  FerryService ferry(WriteConfig(*dir, archive, conninfo, "io_uring",
                                 "scheduled_backups = false\nlogical_slot = \"ferry_main_cdc\"\n"),
                     *dir + "/ferry.log");
  ASSERT_TRUE(ferry.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return FerryFlush(**pg).valid(); }, 30)) << ferry.Log();

  Q(**pg, "create table t (id int primary key, v text)");
  std::atomic<int> rows{0};
  Repeat writer([&] {
    const int id = rows + 1;
    if ((*pg)->Query(absl::StrCat("insert into t values (", id, ", repeat('x', 2000))")).ok()) rows = id;
  });

  // How often each stream came back: the WAL's line ends there, the change events' names them.
  auto wal_back = [&] { return Count(ferry.Log(), "event=reconnected\n"); };
  auto changes_back = [&] { return Count(ferry.Log(), "event=reconnected stream=pg-changes"); };

  // Three cuts: each is noticed at once (the socket closes) and healed by a reconnect.
  for (int cut = 1; cut <= 3; ++cut) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    relay.Cut();
    ASSERT_TRUE(WaitFor([&] { return wal_back() >= cut && changes_back() >= cut; }, 30))
        << "cut " << cut << ":\n" << ferry.Log();
  }

  // A stall: nothing flows, nothing closes. Only the silence tells, after wal_sender_timeout.
  // Once both walsenders stream: a stall during a reconnect's commands is noticed only after
  // kServerSilenceMs (60 s; then it reconnects too), longer than this test waits.
  ASSERT_TRUE(WaitFor([&] { return Q(**pg, "select count(*) from pg_stat_replication where state = 'streaming'") == "2"; },
                      30));
  relay.Stall(true);
  ASSERT_TRUE(WaitFor([&] { return Count(ferry.Log(), "no message from the server for") >= 2; }, 30))
      << ferry.Log();
  relay.Stall(false);
  ASSERT_TRUE(WaitFor([&] { return wal_back() >= 4 && changes_back() >= 4; }, 60)) << ferry.Log();
  EXPECT_GE(relay.accepted(), 8);

  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  writer.Stop();
  ASSERT_GT(rows.load(), 0);
  Q(**pg, "select pg_switch_wal()");
  WaitUntilArchived(**pg);
  // The change events of every committed row arrive, each once.
  const int committed = std::stoi(Q(**pg, "select count(*) from t"));
  auto archived_inserts = [&] {
    auto changes = RunFerry({"changes", "--archive", archive, "--source", "main"});
    return changes.ok() && changes->exit_code == 0 ? Count(changes->out, "\"op\":\"c\"") : -1;
  };
  EXPECT_TRUE(WaitFor([&] { return archived_inserts() >= committed; }, 60)) << ferry.Log();
  auto primary_end = Lsn::Parse(Q(**pg, "select pg_current_wal_flush_lsn()"));
  ASSERT_TRUE(primary_end.ok());
  auto code = ferry.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << ferry.Log();

  auto verify = RunFerry({"verify", "--archive", archive});
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->exit_code, 0) << verify->out << verify->err;
  auto archived = Lsn::Parse(ArchiveEnd(archive, "main", "pg-wal"));
  ASSERT_TRUE(archived.ok());
  EXPECT_GE(*archived, *primary_end) << "the archive ends before the primary's WAL";
  EXPECT_GE(Count(ferry.Log(), "event=disconnected"), 8) << ferry.Log();
  EXPECT_EQ(archived_inserts(), committed);
}

}  // namespace
}  // namespace ferry::testing

namespace ferry::testing {
namespace {

// Runs openssl; a failure fails the test.
void OpenSsl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = local::RunCommand(argv);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->err;
}

// A CA, a server certificate it signed for localhost and 127.0.0.1, and a second CA that
// signed nothing, all made for the test.
void MakeCertificates(const std::string& d) {
  for (const char* ca : {"ca", "other-ca"}) {
    OpenSsl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", std::string("/CN=ferry test ") + ca,
             "-keyout", d + "/" + ca + ".key", "-out", d + "/" + ca + ".crt"});
  }
  OpenSsl({"req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", d + "/server.key", "-out",
           d + "/server.csr"});
  std::ofstream(d + "/san.ext") << "subjectAltName = DNS:localhost, IP:127.0.0.1\n";
  OpenSsl({"x509", "-req", "-in", d + "/server.csr", "-CA", d + "/ca.crt", "-CAkey", d + "/ca.key",
           "-CAcreateserial", "-days", "1", "-extfile", d + "/san.ext", "-out", d + "/server.crt"});
  // The server reads its key as the postgres user and wants it private.
  ASSERT_TRUE(local::GiveToServerUser(d + "/server.key").ok());
  ASSERT_EQ(chmod((d + "/server.key").c_str(), 0600), 0);
}

// TLS to PostgreSQL with sslmode=verify-full (any libpq sslmode passes through the conninfo):
// the replication connection is encrypted and the server's certificate checked against the
// CA; with another CA the connection is refused, named in the log, and nothing is archived.
TEST(TlsTest, VerifyFullConnectsAndAWrongCaIsRefused) {
  auto dir = local::MakeTempDir("ferry-tls-test");
  ASSERT_TRUE(dir.ok());
  MakeCertificates(*dir);
  if (::testing::Test::HasFatalFailure()) return;
  local::LocalPostgresOptions o;
  o.settings = {"ssl = on", absl::StrCat("ssl_cert_file = '", *dir, "/server.crt'"),
                absl::StrCat("ssl_key_file = '", *dir, "/server.key'")};
  auto pg = LocalPostgres::Create(o);
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto conninfo = [&](const std::string& ca) {
    return absl::StrCat("host=localhost port=", (*pg)->port(), " user=postgres dbname=postgres sslmode=verify-full sslrootcert=",
                        *dir, "/", ca, ".crt");
  };

  const std::string archive = *dir + "/archive";
  FerryService ferry(WriteConfig(*dir, archive, conninfo("ca"), "io_uring"), *dir + "/ferry.log");
  ASSERT_TRUE(ferry.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return FerryFlush(**pg).valid(); }, 30)) << ferry.Log();
  EXPECT_EQ(Q(**pg, "select s.ssl from pg_stat_ssl s join pg_stat_replication r using (pid) "
                    "where r.application_name = 'ferry_main'"), "t")
      << "the replication connection is not encrypted";
  Q(**pg, "create table t as select g from generate_series(1, 1000) g");
  WaitUntilArchived(**pg);
  ASSERT_TRUE(ferry.Terminate().ok());

  const std::string other_dir = *dir + "/wrong-ca";
  std::filesystem::create_directories(other_dir);
  FerryService refused(WriteConfig(other_dir, other_dir + "/archive", conninfo("other-ca"), "io_uring"),
                       other_dir + "/ferry.log");
  ASSERT_TRUE(refused.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(refused.Log(), "certificate verify failed"); }, 30))
      << refused.Log();
  EXPECT_TRUE(absl::StrContains(refused.Log(), "event=disconnected")) << refused.Log();
  EXPECT_EQ(Q(**pg, "select count(*) from pg_stat_replication"), "0");
  ASSERT_TRUE(refused.Terminate().ok());
}

}  // namespace
}  // namespace ferry::testing
