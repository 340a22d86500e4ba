// The service's own watch over what it keeps: a byte flipped in the archive turns /healthz 503
// naming the file (the read-back verifier), and clears once the spot reads back intact; 1,000
// idle connections and slow clients on the HTTP port do not keep /healthz from answering.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "local/local_postgres.h"
#include "local/process.h"
#include "storage/archive.h"
#include "tests/fixtures/pg_cluster.h"
#include "tests/fixtures/scratch.h"

namespace ferry::testing {
namespace {

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(HealthTest, DamageTurnsHealthRedNamingTheFileAndIdleClientsCannotStarveIt) {
  struct rlimit files;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  files.rlim_cur = files.rlim_max;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &files), 0);
  ASSERT_GE(files.rlim_cur, 2100u) << "the test opens 1,000 connections";

  auto dir = local::MakeTempDir("ferry-health");
  ASSERT_TRUE(dir.ok());
  const std::string archive = *dir + "/archive";
  MakeArchiveDir(archive);
  auto pg = local::LocalPostgres::Create({});
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto port = local::FindFreeLoopbackPort();
  ASSERT_TRUE(port.ok());
  const std::string config = *dir + "/ferry.toml";
  std::ofstream(config) << "[archive]\npath = \"" << archive << "\"\nwriter = \"posix\"\nsegment_mb = 1\n"
                        << "verify_mb_per_s = 64\nverify_sweep_every = \"1s\"\n\n[http]\nlisten = \"127.0.0.1:" << *port << "\"\n\n"
                        << "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"" << (*pg)->Conninfo()
                        << "\"\nscheduled_backups = false\n";
  FerryService ferry(config, *dir + "/ferry.log");
  ASSERT_TRUE(ferry.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return FerryFlush(**pg).valid(); }, 30)) << ferry.Log();
  Pgbench(**pg, {"-i", "-s", "2", "-q"});
  WaitUntilArchived(**pg);

  httplib::Client http("127.0.0.1", *port);
  http.set_read_timeout(5, 0);
  auto healthz = [&] {
    auto r = http.Get("/healthz");
    return r ? std::make_pair(r->status, r->body) : std::make_pair(0, std::string());
  };
  ASSERT_EQ(healthz().first, 200) << healthz().second << ferry.Log();

  // 1,000 idle connections and 50 clients that never finish their request.
  std::vector<int> idle;
  for (int i = 0; i < 1050; ++i) {
    const int fd = Connect(*port);
    ASSERT_GE(fd, 0) << "connection " << i;
    if (i >= 1000) {
      const std::string partial = "GET /metrics HTTP/1.1\r\nHost: x\r\n";  // never ends
      ASSERT_EQ(write(fd, partial.data(), partial.size()), static_cast<ssize_t>(partial.size()));
    }
    idle.push_back(fd);
  }
  usleep(200000);
  for (int round = 0; round < 5; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    httplib::Client fresh("127.0.0.1", *port);
    fresh.set_connection_timeout(2, 0);
    fresh.set_read_timeout(2, 0);
    auto r = fresh.Get("/healthz");
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(r) << "/healthz did not answer with 1,050 idle or slow connections open";
    EXPECT_EQ(r->status, 200) << r->body;
    std::printf("/healthz with 1,050 idle or slow connections: %.1f ms\n", ms);
  }
  for (int fd : idle) close(fd);

  // A flipped byte in an archived frame: the verifier reads it back and health names it.
  auto a = storage::Archive::Open(archive, storage::ArchiveOptions{});
  ASSERT_TRUE(a.ok()) << a.status();
  auto wal = (*a)->Stream("main", pipeline::StreamKind::kPgWal);
  ASSERT_TRUE(wal.ok());
  ASSERT_GT((*wal)->frames().size(), 4u);
  const storage::FrameLocation f = (*wal)->frames()[(*wal)->frames().size() / 2];
  const std::string seg = (*wal)->SegmentPath(f.segment_seq);
  const uint64_t at = f.offset + f.header.frame_size() - 1;
  FlipByte(seg, at, 0x20);
  EXPECT_TRUE(WaitFor([&] { return healthz().first == 503; }, 60)) << healthz().second << ferry.Log();
  const auto red = healthz();
  EXPECT_NE(red.second.find(seg), std::string::npos) << red.second;
  EXPECT_NE(red.second.find(absl::StrCat("offset ", f.offset)), std::string::npos) << red.second;
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("ferry_archive_damaged_spots 1"), std::string::npos) << metrics->body;
  EXPECT_NE(ferry.Log().find("event=archive_damage"), std::string::npos) << ferry.Log();
  FlipByte(seg, at, 0x20);  // repaired: the next sweep reads it back intact
  EXPECT_TRUE(WaitFor([&] { return healthz().first == 200; }, 60)) << healthz().second;
  ASSERT_TRUE(ferry.Terminate().ok());
}

}  // namespace
}  // namespace ferry::testing
