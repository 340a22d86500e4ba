// Redis capture and point-in-time restore against real Redis 7 servers: ferry as a replica
// (PSYNC), both RDB transfer forms, WAIT meaning "durable in the archive", resume by partial
// resync after kill -9, failover to a promoted replica, and restores whose DEBUG DIGEST
// equals the primary's at each recorded instant (checked with redis-check-aof too).
#include <sys/stat.h>
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <atomic>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/redis/client.h"
#include "local/local_postgres.h"
#include "local/local_redis.h"
#include "pipeline/position.h"
#include "tests/fixtures/ferry_process.h"
#include "tests/fixtures/pg_cluster.h"
#include "tests/fixtures/tcp_relay.h"

namespace ferry::testing {
namespace {

using local::LocalRedis;

// One connection for commands that must share it (SELECT, MULTI/EXEC, WAIT after writes).
class Conn {
 public:
  explicit Conn(const LocalRedis& r) {
    timeval tv{10, 0};
    c_ = redisConnectWithTimeout("127.0.0.1", r.port(), tv);
    EXPECT_TRUE(c_ != nullptr && c_->err == 0) << (c_ ? c_->errstr : "no memory");
  }
  ~Conn() {
    if (c_ != nullptr) redisFree(c_);
  }
  // Runs a command; an error reply or a lost connection fails the test. Returns the reply
  // as text (integers in decimal).
  std::string Run(const std::vector<std::string>& argv) {
    std::vector<const char*> args;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c_, static_cast<int>(argv.size()), args.data(), lens.data()));
    EXPECT_NE(r, nullptr) << argv[0] << ": " << c_->errstr;
    if (r == nullptr) return "";
    std::string out;
    if (r->type == REDIS_REPLY_ERROR) ADD_FAILURE() << argv[0] << ": " << std::string(r->str, r->len);
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) out.assign(r->str, r->len);
    if (r->type == REDIS_REPLY_INTEGER) out = absl::StrCat(r->integer);
    freeReplyObject(r);
    return out;
  }

 private:
  redisContext* c_ = nullptr;
};

// One INFO field of the server ("" when it has none).
std::string Info(const LocalRedis& r, const std::string& field) {
  auto value = client::redis::RedisInfoField(r.Endpoint(), field);
  EXPECT_TRUE(value.ok() || absl::IsNotFound(value.status())) << value.status();
  return value.value_or("");
}

std::string Digest(const LocalRedis& r) {
  auto d = local::RedisDigest(r);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.value_or("");
}

// `extra` goes into [archive] (first line) and the source; by default no scheduled snapshots.
std::string WriteRedisConfig(const std::string& dir, const std::string& archive, const std::string& address,
                             const std::string& archive_extra = "", const std::string& source_extra = "scheduled_backups = false\n",
                             const std::string& tail = "") {
  const std::string path = dir + "/ferry.toml";
  std::ofstream(path) << "[archive]\npath = \"" << archive << "\"\nwriter = \"io_uring\"\n" << archive_extra << "\n"
                      << "[[source]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"" << address << "\"\n"
                      << source_extra << tail;
  return path;
}

// Phase i of a workload over every data type, several databases, expiring keys, a Lua
// script and MULTI/EXEC; ends with WAIT 1, so everything is durable in the archive.
void Workload(LocalRedis& r, int i) {
  Conn c(r);
  const std::string n = absl::StrCat(i);
  c.Run({"SET", "str:" + n, "value " + n});
  c.Run({"APPEND", "str:0", "+" + n});
  c.Run({"INCRBY", "counter", n});
  c.Run({"INCRBYFLOAT", "float", "1.5"});
  c.Run({"HSET", "hash", "f" + n, n, "g" + n, "x"});
  c.Run({"RPUSH", "list", "a" + n, "b" + n});
  c.Run({"LPOP", "list"});
  c.Run({"SADD", "set", "m" + n, "n" + n});
  c.Run({"SREM", "set", "n" + n});
  c.Run({"ZADD", "zset", n, "z" + n});
  c.Run({"XADD", "stream", "*", "field", n});
  c.Run({"SET", "ttl:" + n, "v", "EX", "100000"});
  c.Run({"EXPIRE", "hash", "200000"});
  c.Run({"EVAL", "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])", "2", "lua:" + n,
         "luacount", n});
  c.Run({"MULTI"});
  c.Run({"SET", "tx:" + n, n});
  c.Run({"INCR", "txcount"});
  c.Run({"EXEC"});
  c.Run({"SELECT", "3"});
  c.Run({"SET", "db3:" + n, n});
  c.Run({"SELECT", "0"});
  c.Run({"DEL", "str:" + absl::StrCat(i - 1)});
  int acked = 0;
  EXPECT_TRUE(absl::SimpleAtoi(c.Run({"WAIT", "1", "5000"}), &acked) && acked >= 1)
      << "no replica (ferry) acknowledged the writes";
}

// Until ferry is the primary's one online replica.
void WaitOnline(const LocalRedis& primary, const FerryService& ferry) {
  EXPECT_TRUE(WaitFor([&] {
    return Info(primary, "connected_slaves") == "1" && absl::StrContains(Info(primary, "slave0"), "state=online");
  }, 30)) << "ferry never came online as a replica; log:\n" << ferry.Log();
}

struct RedisSetup {
  std::string dir, archive, config;
  std::unique_ptr<LocalRedis> primary;
  std::unique_ptr<FerryService> ferry;
};

// A primary with `args`, some data from before ferry attached, and ferry replicating it.
RedisSetup StartRedisSetup(std::vector<std::string> args) {
  RedisSetup s;
  auto dir = local::MakeTempDir("ferry-redis-test");
  EXPECT_TRUE(dir.ok()) << dir.status();
  s.dir = dir.value_or("/tmp");
  s.archive = s.dir + "/archive";
  local::LocalRedisOptions o;
  args.insert(args.end(), {"--repl-diskless-sync-delay", "0"});
  o.args = args;
  auto primary = LocalRedis::Start(o);
  EXPECT_TRUE(primary.ok()) << primary.status();
  if (!primary.ok()) return s;
  s.primary = std::move(*primary);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(s.primary->Command({"SET", absl::StrCat("before:", i), "x"}).ok());
  s.config = WriteRedisConfig(s.dir, s.archive, s.primary->Address());
  s.ferry = std::make_unique<FerryService>(s.config, s.dir + "/ferry.log");
  EXPECT_TRUE(s.ferry->Start().ok());
  WaitOnline(*s.primary, *s.ferry);
  return s;
}

// `ferry restore redis` with `target` into dir/name, loaded by a real redis-server; returns
// its digest. Checks the directory with redis-check-aof first.
std::string RestoreAndDigest(const RedisSetup& s, const std::string& name, const std::vector<std::string>& target) {
  const std::string to = s.dir + "/" + name;
  std::vector<std::string> args = {"restore", "redis", "--archive", s.archive, "--source", "cache", "--to", to};
  args.insert(args.end(), target.begin(), target.end());
  if (!RunFerrySucceeding(args, name)) return "";
  auto check = local::RunCommand({"redis-check-aof", to + "/appendonlydir/appendonly.aof.manifest"});
  EXPECT_TRUE(check.ok() && check->exit_code == 0) << name << ": " << (check.ok() ? check->out + check->err : "");
  local::LocalRedisOptions o;
  o.dir = to;
  o.args = {"--appendonly", "yes"};
  auto restored = LocalRedis::Start(o);
  EXPECT_TRUE(restored.ok()) << restored.status();
  return restored.ok() ? Digest(**restored) : "";
}

class RedisPitrTest : public ::testing::TestWithParam<const char*> {};

// Every data type, three instants, both RDB transfer forms: each restore's digest equals the
// primary's at that instant, by time and by offset, and --latest equals the end.
TEST_P(RedisPitrTest, RestoresEachInstantByTimeAndOffset) {
  RedisSetup s = StartRedisSetup({"--repl-diskless-sync", GetParam()});
  ASSERT_NE(s.primary, nullptr);
  std::vector<std::string> digests, times, offsets;
  for (int i = 1; i <= 3; ++i) {
    Workload(*s.primary, i);
    digests.push_back(Digest(*s.primary));
    times.push_back(pipeline::FormatUnixMicros(pipeline::NowUnixMicros()));
    offsets.push_back(Info(*s.primary, "master_repl_offset"));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // later writes arrive later
  }
  Workload(*s.primary, 4);
  const std::string final_digest = Digest(*s.primary);
  EXPECT_NE(digests[0], digests[1]);
  EXPECT_NE(digests[1], digests[2]);
  EXPECT_NE(digests[2], final_digest);
  EXPECT_EQ(Info(*s.primary, "sync_full"), "1");
  // The primary used the transfer form under test.
  std::ifstream log(s.primary->dir() + "/redis.log");
  const std::string primary_log((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(absl::StrContains(primary_log, std::string(GetParam()) == "yes" ? "target: replicas sockets" : "target: disk"))
      << primary_log;
  auto exit_code = s.ferry->Terminate();
  ASSERT_TRUE(exit_code.ok() && *exit_code == 0) << s.ferry->Log();
  EXPECT_TRUE(absl::StrContains(s.ferry->Log(), "event=full_resync epoch=1")) << s.ferry->Log();

  ASSERT_TRUE(RunFerrySucceeding({"verify", "--archive", s.archive}, "verify"));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(RestoreAndDigest(s, absl::StrCat("t", i), {"--time", times[i]}), digests[i]) << "T" << i + 1;
  }
  EXPECT_EQ(RestoreAndDigest(s, "offset", {"--offset", offsets[1]}), digests[1]);
  EXPECT_EQ(RestoreAndDigest(s, "latest", {"--latest"}), final_digest);
  // Outside the window: one line, exit 1, nothing written.
  auto early = RunFerry({"restore", "redis", "--archive", s.archive, "--source", "cache", "--time",
                         "2000-01-01T00:00:00Z", "--to", s.dir + "/early"});
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(early->err, "before the oldest Redis snapshot")) << early->err;
  EXPECT_FALSE(std::filesystem::exists(s.dir + "/early/appendonlydir"));
}

INSTANTIATE_TEST_SUITE_P(Transfer, RedisPitrTest, ::testing::Values("yes", "no"),
                         [](const auto& info) { return std::string(info.param) == "yes" ? "Diskless" : "Disk"; });

// kill -9 of ferry in the middle of the load, writes while it is down, a restart: the
// primary serves a partial resync (sync_full stays 1), and the archive has every command
// once: the restore equals the primary.
TEST(RedisResumeTest, KillNineThenPartialResyncWithoutGapOrDuplicate) {
  RedisSetup s = StartRedisSetup({});
  ASSERT_NE(s.primary, nullptr);
  Workload(*s.primary, 1);
  ASSERT_TRUE(s.ferry->Kill9().ok());
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(s.primary->Command({"INCR", "while-down"}).ok());
  ASSERT_TRUE(s.ferry->Start().ok());
  WaitOnline(*s.primary, *s.ferry);
  Workload(*s.primary, 2);
  EXPECT_EQ(Info(*s.primary, "sync_full"), "1") << s.ferry->Log();
  EXPECT_EQ(Info(*s.primary, "sync_partial_ok"), "1") << s.ferry->Log();
  const std::string digest = Digest(*s.primary);
  ASSERT_TRUE(s.ferry->Terminate().ok());
  EXPECT_TRUE(absl::StrContains(s.ferry->Log(), "sync=partial")) << s.ferry->Log();
  ASSERT_TRUE(RunFerrySucceeding({"verify", "--archive", s.archive}, "verify"));
  EXPECT_EQ(RestoreAndDigest(s, "latest", {"--latest"}), digest);
}

// RPO 0 for WAIT: a write acknowledged by WAIT 1 survives kill -9 of ferry and of the
// primary, and is in the restore.
TEST(RedisWaitTest, WriteAcknowledgedByWaitSurvivesKillOfBoth) {
  RedisSetup s = StartRedisSetup({});
  ASSERT_NE(s.primary, nullptr);
  {
    Conn c(*s.primary);
    c.Run({"SET", "acknowledged", "yes"});
    ASSERT_EQ(c.Run({"WAIT", "1", "1000"}), "1");
  }
  ASSERT_TRUE(s.ferry->Kill9().ok());
  ASSERT_TRUE(s.primary->Kill().ok());
  const std::string to = s.dir + "/restored";
  auto r = RunFerry({"restore", "redis", "--archive", s.archive, "--source", "cache", "--latest", "--to", to});
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->out + r->err : "");
  local::LocalRedisOptions o;
  o.dir = to;
  o.args = {"--appendonly", "yes"};
  auto restored = LocalRedis::Start(o);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->Command({"GET", "acknowledged"}).value_or(""), "yes");
}

// A replica of the primary is promoted (REPLICAOF NO ONE) and ferry is pointed at it: PSYNC2
// continues with a partial resync under the new replication id, and the archive stays one
// continuous stream that restores to the new primary's data.
TEST(RedisFailoverTest, PromotedReplicaContinuesWithPartialResync) {
  RedisSetup s = StartRedisSetup({});
  ASSERT_NE(s.primary, nullptr);
  local::LocalRedisOptions ro;
  ro.args = {"--replicaof", "127.0.0.1", absl::StrCat(s.primary->port())};
  auto replica = LocalRedis::Start(ro);
  ASSERT_TRUE(replica.ok()) << replica.status();
  ASSERT_TRUE(WaitFor([&] { return Info(**replica, "master_link_status") == "up"; }, 30));
  Workload(*s.primary, 1);
  ASSERT_TRUE(WaitFor([&] {
    return Info(**replica, "master_repl_offset") == Info(*s.primary, "master_repl_offset");
  }, 30));
  ASSERT_TRUE(s.ferry->Terminate().ok());
  ASSERT_TRUE(s.primary->Stop().ok());
  ASSERT_TRUE((*replica)->Command({"REPLICAOF", "NO", "ONE"}).ok());

  WriteRedisConfig(s.dir, s.archive, (*replica)->Address());
  ASSERT_TRUE(s.ferry->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(Info(**replica, "slave0"), "state=online"); }, 30))
      << s.ferry->Log();
  Workload(**replica, 2);
  EXPECT_EQ(Info(**replica, "sync_full"), "0") << s.ferry->Log();
  EXPECT_EQ(Info(**replica, "sync_partial_ok"), "1") << s.ferry->Log();
  const std::string digest = Digest(**replica);
  ASSERT_TRUE(s.ferry->Terminate().ok());
  ASSERT_TRUE(RunFerrySucceeding({"verify", "--archive", s.archive}, "verify"));
  EXPECT_EQ(RestoreAndDigest(s, "latest", {"--latest"}), digest);
}

// Scheduled snapshots (snapshot_every) come over a second, RDB-only connection while the
// command stream goes on (one full resync in ferry's log, ever); retention expires old
// snapshots and the command segments before the oldest kept one; every point from it on
// still restores, in the database the stream had selected.
TEST(RedisSnapshotTest, ScheduledSnapshotsWhileStreamingAndRetention) {
  RedisSetup s = StartRedisSetup({});
  ASSERT_NE(s.primary, nullptr);
  ASSERT_TRUE(s.ferry->Terminate().ok());
  WriteRedisConfig(s.dir, s.archive, s.primary->Address(), "segment_mb = 1\n", "snapshot_every = \"1s\"\n",
                   "\n[retention]\nredis_snapshots = \"2s\"\nwal = \"1s\"\n");
  ASSERT_TRUE(s.ferry->Start().ok());
  WaitOnline(*s.primary, *s.ferry);
  std::mt19937 rng(5);
  auto fill = [&](Conn& c, int n) {
    for (int i = 0; i < n; ++i) {
      std::string v(8192, ' ');
      for (char& ch : v) ch = static_cast<char>('a' + rng() % 26);
      c.Run({"SET", absl::StrCat("big:", rng() % 1000), v});
    }
    int acked = 0;
    EXPECT_TRUE(absl::SimpleAtoi(c.Run({"WAIT", "1", "5000"}), &acked) && acked >= 1);
  };
  Conn c(*s.primary);
  c.Run({"SELECT", "3"});
  fill(c, 400);  // ~3 MiB: several 1 MiB segments
  auto snapshots_done = [&] {
    size_t n = 0;
    for (size_t at = 0; (at = s.ferry->Log().find("event=backup_done", at)) != std::string::npos; ++at) ++n;
    return n;
  };
  ASSERT_TRUE(WaitFor([&] { return snapshots_done() >= 3; }, 60)) << s.ferry->Log();
  // One by hand, beside the service: `ferry backup` on a Redis source takes an RDB snapshot.
  auto by_hand = RunFerry({"backup", "--config", s.config, "--source", "cache", "--json"});
  ASSERT_TRUE(by_hand.ok());
  EXPECT_EQ(by_hand->exit_code, 0) << by_hand->err;
  EXPECT_TRUE(absl::StrContains(by_hand->out, "\"kind\":\"redis-rdb\"")) << by_hand->out;
  fill(c, 50);
  const std::string digest = Digest(*s.primary);
  const std::string when = pipeline::FormatUnixMicros(pipeline::NowUnixMicros());
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(s.ferry->Log(), "event=retention"); }, 60)) << s.ferry->Log();
  ASSERT_TRUE(s.ferry->Terminate().ok());
  const std::string log = s.ferry->Log();
  EXPECT_EQ(log.find("event=full_resync"), log.rfind("event=full_resync")) << "the stream was interrupted:\n" << log;
  EXPECT_FALSE(absl::StrContains(log, "event=disconnected")) << log;

  ASSERT_TRUE(RunFerrySucceeding({"verify", "--archive", s.archive}, "verify"));
  auto ls = RunFerry({"ls", "--archive", s.archive, "--json"});
  ASSERT_TRUE(ls.ok() && ls->exit_code == 0);
  EXPECT_FALSE(absl::StrContains(ls->out, "\"start\":\"0\"")) << "no command segment was expired: " << ls->out;
  EXPECT_EQ(RestoreAndDigest(s, "latest", {"--latest"}), digest);
  EXPECT_EQ(RestoreAndDigest(s, "when", {"--time", when}), digest);
}

// A restore never ends inside a transaction: an offset inside MULTI ... EXEC restores the
// state before the MULTI; the offset after EXEC restores the whole transaction.
TEST(RedisTxTest, OffsetInsideMultiExecCutsBackToBeforeTheTransaction) {
  RedisSetup s = StartRedisSetup({});
  ASSERT_NE(s.primary, nullptr);
  Workload(*s.primary, 1);
  const std::string before = Digest(*s.primary);
  std::string after_exec;
  {
    Conn c(*s.primary);
    c.Run({"MULTI"});
    c.Run({"SET", "tx:a", "1"});
    c.Run({"SET", "tx:b", "2"});
    c.Run({"EXEC"});
    after_exec = Info(*s.primary, "master_repl_offset");  // before WAIT adds its GETACK
    int acked = 0;
    ASSERT_TRUE(absl::SimpleAtoi(c.Run({"WAIT", "1", "5000"}), &acked) && acked == 1);
  }
  const std::string after = Digest(*s.primary);
  ASSERT_NE(before, after);
  ASSERT_TRUE(s.ferry->Terminate().ok());
  uint64_t exec_end = 0;
  ASSERT_TRUE(absl::SimpleAtoi(after_exec, &exec_end));
  EXPECT_EQ(RestoreAndDigest(s, "inside", {"--offset", absl::StrCat(exec_end - 1)}), before);
  EXPECT_EQ(RestoreAndDigest(s, "whole", {"--offset", after_exec}), after);
}

// AUTH as an ACL user whose password ferry reads from a file.
TEST(RedisAuthTest, AclUserWithPasswordFromAFile) {
  local::LocalRedisOptions o;
  o.args = {"--user", "default", "off", "--user", "ferry", "on", ">s3cret", "~*", "&*", "+@all", "--repl-diskless-sync-delay", "0"};
  o.auth_user = "ferry";
  o.auth_password = "s3cret";
  auto primary = LocalRedis::Start(o);
  ASSERT_TRUE(primary.ok()) << primary.status();
  auto dir = local::MakeTempDir("ferry-redis-test");
  ASSERT_TRUE(dir.ok());
  std::ofstream(*dir + "/pass") << "s3cret\n";
  ASSERT_EQ(chmod((*dir + "/pass").c_str(), 0600), 0);  // a secret others can read is refused
  const std::string archive = *dir + "/archive";
  FerryService ferry(WriteRedisConfig(*dir, archive, (*primary)->Address(), "",
                                      absl::StrCat("scheduled_backups = false\nuser = \"ferry\"\npassword_file = \"",
                                                   *dir, "/pass\"\n")),
                     *dir + "/ferry.log");
  ASSERT_TRUE(ferry.Start().ok());
  // The default user is off: only ferry's AUTH gets it in, and it shows as a replica.
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(Info(**primary, "slave0"), "state=online"); }, 30)) << ferry.Log();
  ASSERT_TRUE(ferry.Terminate().ok());
}

// A Redis primary that ferry reaches through a TcpRelay the test controls.
class RelayedRedisTest : public ::testing::Test {
 protected:
  // Starts the primary (with `server_args`), the relay and ferry (with `source_extra`), then
  // waits until ferry is its online replica.
  void Start(std::vector<std::string> server_args, const std::string& source_extra = "scheduled_backups = false\n") {
    local::LocalRedisOptions o;
    o.args = std::move(server_args);
    auto primary = LocalRedis::Start(o);
    ASSERT_TRUE(primary.ok()) << primary.status();
    primary_ = std::move(*primary);
    relay_ = std::make_unique<TcpRelay>(primary_->port());
    auto dir = local::MakeTempDir("ferry-redis-test");
    ASSERT_TRUE(dir.ok());
    view_.dir = *dir;
    view_.archive = *dir + "/archive";
    ferry_ = std::make_unique<FerryService>(
        WriteRedisConfig(view_.dir, view_.archive, absl::StrCat("127.0.0.1:", relay_->port()), "", source_extra),
        view_.dir + "/ferry.log");
    ASSERT_TRUE(ferry_->Start().ok());
    WaitOnline(*primary_, *ferry_);
  }

  // After ferry has stopped: the archive verifies and restores to `digest`.
  void ExpectArchiveRestoresTo(const std::string& digest) {
    ASSERT_TRUE(RunFerrySucceeding({"verify", "--archive", view_.archive}, "verify"));
    EXPECT_EQ(RestoreAndDigest(view_, "latest", {"--latest"}), digest);
  }

  std::unique_ptr<LocalRedis> primary_;
  std::unique_ptr<TcpRelay> relay_;
  std::unique_ptr<FerryService> ferry_;
  RedisSetup view_;  // dir and archive
};

// Bytes in the replication stream that are not RESP: ferry stops with a line naming the
// offset, acknowledges nothing after the last whole command, and the archive verifies and
// restores to what the primary had before.
TEST_F(RelayedRedisTest, BadRespStopsWithAClearErrorAndAnArchiveThatVerifies) {
  Start({});
  if (HasFatalFailure()) return;
  Workload(*primary_, 1);
  const std::string digest = Digest(*primary_);
  relay_->Inject("*2\r\n$3\r\nDEL\r\n$x\r\n");
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(ferry_->Log(), "malformed RESP"); }, 30)) << ferry_->Log();
  EXPECT_TRUE(absl::StrContains(ferry_->Log(), "in the replication stream at byte ")) << ferry_->Log();
  auto exit_code = ferry_->Terminate();
  ASSERT_TRUE(exit_code.ok());
  EXPECT_NE(*exit_code, 0) << ferry_->Log();
  ExpectArchiveRestoresTo(digest);
}

// The connection to the primary cut, then stalled (nothing flows, nothing closes): the cut is
// seen at once, the stall after repl_timeout without even the primary's PING; both times ferry
// reconnects, continues by partial resync, and the archive restores to the primary's digest.
TEST_F(RelayedRedisTest, CutAndStalledStreamsReconnectByPartialResync) {
  Start({"--repl-ping-replica-period", "1"}, "scheduled_backups = false\nrepl_timeout = \"3s\"\n");
  if (HasFatalFailure()) return;
  Workload(*primary_, 1);
  relay_->Cut();
  Workload(*primary_, 2);  // ends with WAIT 1: ferry is back and has it durable
  relay_->Stall(true);
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(ferry_->Log(), "no bytes from the primary for 3 s"); }, 30))
      << ferry_->Log();
  relay_->Stall(false);
  Workload(*primary_, 3);
  const std::string digest = Digest(*primary_);
  EXPECT_EQ(Info(*primary_, "sync_full"), "1") << "a reconnect fell back to a full resync";
  EXPECT_GE(relay_->accepted(), 3);
  ASSERT_TRUE(ferry_->Terminate().ok());
  ExpectArchiveRestoresTo(digest);
}

}  // namespace
}  // namespace ferry::testing
