// Cross-region: every stream and snapshot goes through Kafka (librdkafka's mock cluster, the
// real protocol) to `ferry mirror`, whose archive must verify to the same digests as the
// primary region's, through broker outages, injected produce errors, and restarts of either
// side.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <rapidjson/document.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cross_region/kafka.h"
#include "local/local_postgres.h"
#include "local/local_redis.h"
#include "local/process.h"
#include "pipeline/position.h"
#include "storage/archive_keys.h"
#include "tests/fixtures/ferry_process.h"
#include "tests/fixtures/pg_cluster.h"

namespace ferry::testing {
namespace {

using local::LocalPostgres;
using local::LocalRedis;

// "source/stream" -> digest, and "source/snapshots" -> the snapshot ids, from verify --json.
// Empty on a failed verify (reported).
std::map<std::string, std::string> Digests(const std::string& archive) {
  std::map<std::string, std::string> out;
  auto r = RunFerry({"verify", "--archive", archive, "--json"});
  if (!r.ok() || r->exit_code != 0) {
    ADD_FAILURE() << "verify " << archive << ": " << (r.ok() ? r->out + r->err : r.status().ToString());
    return out;
  }
  rapidjson::Document d;
  d.Parse(r->out.c_str());
  if (d.HasParseError() || !d.IsObject()) {
    ADD_FAILURE() << "verify --json: " << r->out;
    return out;
  }
  for (const auto& src : d["sources"].GetArray()) {
    const std::string name = src["name"].GetString();
    for (const auto& st : src["streams"].GetArray()) {
      out[name + "/" + st["stream"].GetString()] = st["digest"].GetString();
    }
    std::string ids;
    for (const auto& snap : src["snapshots"].GetArray()) absl::StrAppend(&ids, snap["id"].GetString(), " ");
    out[name + "/snapshots"] = ids;
  }
  return out;
}

std::string Show(const std::map<std::string, std::string>& m) {
  std::string s;
  for (const auto& [k, v] : m) absl::StrAppend(&s, k, "=", v, " ");
  return s;
}

struct Regions {
  std::string dir, archive, mirror_archive, config, mirror_config;
  std::unique_ptr<cross_region::MockCluster> kafka;
  std::unique_ptr<LocalPostgres> pg;
  std::unique_ptr<LocalRedis> redis;
  std::unique_ptr<FerryService> ferry, mirror;

  // Every partition of ferry's topics led by `broker` (-1: none, Kafka is down for them).
  void SetLeaders(int broker) {
    for (const char* topic : {"main.pg-wal", "cache.redis-commands", "main.chunks", "cache.chunks", "main.snapshots",
                              "cache.snapshots"}) {
      // Partition 0 always exists (set_leader creates the topic if needed); how many more
      // a topic has depends on how it was created.
      for (int p = 0; p < 4; ++p) {
        absl::Status st = kafka->SetLeader(absl::StrCat("ferry.eu.", topic), p, broker);
        ASSERT_TRUE(st.ok() || p > 0) << st;
      }
    }
  }

  // The two archives verify to the same digests (streams and snapshot ids) within `seconds`.
  bool WaitMirrored(int seconds) {
    std::map<std::string, std::string> a, b;
    const bool same = WaitFor([&] {
      a = Digests(archive);
      b = Digests(mirror_archive);
      return !a.empty() && a == b;
    }, seconds);
    EXPECT_TRUE(same) << "primary: " << Show(a) << "\nmirror:  " << Show(b) << "\nferry log:\n"
                      << ferry->Log() << "\nmirror log:\n" << mirror->Log();
    return same;
  }
};

// A primary region (PostgreSQL, Redis, ferry run shipping to the mock cluster) and a standby
// region (ferry mirror). `source_extra` goes into the PostgreSQL source, `mirror_extra` into
// [mirror], `archive_extra` into both configs' [archive].
Regions Start(const std::string& source_extra = "", const std::string& mirror_extra = "",
              const std::string& archive_extra = "") {
  Regions s;
  Primaries p = StartPrimaries("ferry-kafka-test");
  s.dir = p.dir;
  s.archive = s.dir + "/archive";
  s.mirror_archive = s.dir + "/mirror";
  MakeArchiveDir(s.archive);
  MakeArchiveDir(s.mirror_archive);
  s.pg = std::move(p.pg);
  s.redis = std::move(p.redis);
  auto kafka = cross_region::MockCluster::Start(3);
  EXPECT_TRUE(kafka.ok()) << kafka.status();
  if (!kafka.ok() || !s.pg || !s.redis) return s;
  s.kafka = std::move(*kafka);
  Q(*s.pg, "create table t (id serial primary key, v text)");
  s.config = s.dir + "/ferry.toml";
  // No scheduled drills: not what these tests are about, and a drill's scratch server would
  // outlive a ferry killed with SIGKILL at the end of a test.
  std::ofstream(s.config) << "region = \"eu\"\ndrill_every = \"0s\"\n[archive]\npath = \"" << s.archive << "\"\nsegment_mb = 4\n" << archive_extra << "\n"
                          // Small messages: most frames travel in several parts.
                          << "[kafka]\nbrokers = \"" << s.kafka->bootstrap() << "\"\nmax_message_bytes = 8192\n\n"
                          << "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"" << s.pg->Conninfo()
                          << "\"\nscheduled_backups = false\n" << source_extra << "\n"
                          << "[[source]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"" << s.redis->Address()
                          << "\"\nscheduled_backups = false\n";
  s.mirror_config = s.dir + "/mirror.toml";
  std::ofstream(s.mirror_config) << "region = \"us\"\n[archive]\npath = \"" << s.mirror_archive
                                 << "\"\nsegment_mb = 4\n" << archive_extra << "\n[kafka]\nbrokers = \"" << s.kafka->bootstrap()
                                 << "\"\ntopic_prefix = \"ferry.eu\"\n\n[mirror]\nsources = [\"main\", \"cache\"]\n"
                                 << mirror_extra;
  s.ferry = std::make_unique<FerryService>(s.config, s.dir + "/ferry.log");
  s.mirror = std::make_unique<FerryService>(s.mirror_config, s.dir + "/mirror.log", "mirror");
  EXPECT_TRUE(s.ferry->Start().ok());
  EXPECT_TRUE(WaitFor([&] { return FerryFlush(*s.pg).valid(); }, 30)) << s.ferry->Log();
  EXPECT_TRUE(local::WaitReplicaAcked(*s.redis, 30).ok()) << s.ferry->Log();
  EXPECT_TRUE(RunFerrySucceeding({"backup", "--config", s.config, "--source", "main"}, "backup"));
  EXPECT_TRUE(s.mirror->Start().ok());
  return s;
}

// Writes to both primaries until `stop`: PostgreSQL rows and Redis commands of several kinds.
// Paced: the mock cluster keeps only the last 5 MiB of a partition, and a mirror further
// behind than that would (rightly) stop at the gap.
void Load(const Regions& s, std::atomic<bool>* stop, std::atomic<int>* rounds) {
  for (int i = 0; !*stop; ++i) {
    Q(*s.pg, absl::StrCat("insert into t (v) select repeat(md5(g::text), ", i % 5 == 0 ? 20 : 2,
                          ") from generate_series(1, 100) g"));
    (void)s.redis->Command({"SET", absl::StrCat("k", i), absl::StrCat(i)});
    (void)s.redis->Command({"INCR", "counter"});
    (void)s.redis->Command({"RPUSH", "list", absl::StrCat(i)});
    ++*rounds;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

TEST(KafkaMirrorTest, StreamsAndSnapshotsReachTheMirrorThroughFaults) {
  Regions s = Start();
  ASSERT_TRUE(s.kafka && s.pg && s.redis && s.ferry && s.mirror);
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::thread load([&] { Load(s, &stop, &rounds); });
  auto wait_rounds = [&](int n) { ASSERT_TRUE(WaitFor([&] { return rounds >= n; }, 60)); };

  auto pause = [](int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
  wait_rounds(20);
  // Kafka down mid-stream (no partition has a leader): local archiving goes on (the load
  // keeps being archived and acknowledged), shipping resumes after.
  s.SetLeaders(-1);
  const int before = rounds;
  pause(2000);
  WaitUntilArchived(*s.pg);
  EXPECT_GT(rounds, before + 10) << "writes stalled while Kafka was down";
  s.SetLeaders(1);
  // A broker down for good mid-stream; its partitions fail over to another broker.
  // librdkafka 2.0's mock closes the broker's listening socket and binds its port again; a
  // connect() in that instant can take the port as its ephemeral one, and the mock then
  // aborts the process. The load opens four connections a round, so it pauses around it.
  pause(500);
  stop = true;
  load.join();
  ASSERT_TRUE(s.kafka->SetBrokerDown(1).ok());
  stop = false;
  load = std::thread([&] { Load(s, &stop, &rounds); });
  pause(300);
  s.SetLeaders(2);
  // Produce requests that fail: the idempotent producer retries without reordering.
  pause(500);
  s.kafka->FailNextProduceRequests(10);
  pause(1000);
  // The mirror killed mid-stream and restarted: redelivery is deduplicated.
  ASSERT_TRUE(s.mirror->Kill9().ok());
  pause(1000);
  ASSERT_TRUE(s.mirror->Start().ok());
  pause(1000);
  stop = true;
  load.join();
  WaitUntilArchived(*s.pg);
  ASSERT_TRUE(local::WaitReplicaAcked(*s.redis, 30).ok());
  ASSERT_TRUE(s.WaitMirrored(120));

  // ferry restarted while Kafka is down, with writes meanwhile: caught up from the archive.
  ASSERT_TRUE(s.ferry->Terminate().ok());
  s.SetLeaders(-1);
  ASSERT_TRUE(s.ferry->Start().ok());
  stop = false;
  std::thread more([&] { Load(s, &stop, &rounds); });
  pause(1500);
  stop = true;
  more.join();
  WaitUntilArchived(*s.pg);
  ASSERT_TRUE(local::WaitReplicaAcked(*s.redis, 30).ok());
  // SIGTERM while Kafka is still down: a clean, prompt exit (nothing is lost: the next run
  // ships from the archive).
  auto code = s.ferry->Terminate();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << s.ferry->Log();
  ASSERT_TRUE(s.ferry->Start().ok());
  s.SetLeaders(3);
  ASSERT_TRUE(s.WaitMirrored(120));
  EXPECT_NE(s.mirror->Log().find("event=snapshot_imported"), std::string::npos) << s.mirror->Log();
}

// An encrypted archive's standby: frames reach the mirror sealed as they are, snapshot chunks
// sealed in Kafka and sealed again by the mirror, which holds no plaintext either and
// verifies with the same key file. Two base backups in a row also means the second's chunks
// may arrive before the first's manifest is committed (they used to be forgotten until the
// mirror restarted, and the second snapshot waited for them).
TEST(KafkaMirrorTest, EncryptedArchiveMirrorsSealed) {
  auto key_dir = local::MakeTempDir("ferry-keys");
  ASSERT_TRUE(key_dir.ok()) << key_dir.status();
  const std::string keys = *key_dir + "/archive.keys";
  std::ofstream(keys) << "5 " << std::string(64, 'c') << "\n";
  ASSERT_EQ(chmod(keys.c_str(), 0600), 0);
  Regions s = Start("", "", absl::StrCat("encryption_key_file = \"", keys, "\"\n"));
  ASSERT_TRUE(s.kafka && s.pg && s.redis && s.ferry && s.mirror);
  const std::string canary = "ferry-plaintext-canary";
  Q(*s.pg, absl::StrCat("insert into t (v) select '", canary, "' || g from generate_series(1, 100) g"));
  ASSERT_TRUE(s.redis->Command({"SET", "note", canary}).ok());
  Q(*s.pg, "checkpoint");  // the rows reach the heap files the next backup copies
  ASSERT_TRUE(RunFerrySucceeding({"backup", "--config", s.config, "--source", "main"}, "backup"));
  WaitUntilArchived(*s.pg);
  ASSERT_TRUE(local::WaitReplicaAcked(*s.redis, 30).ok());
  // verify (in Digests) opens every frame and chunk of both archives with the key.
  setenv(storage::kKeyFileEnv, keys.c_str(), 1);
  EXPECT_TRUE(s.WaitMirrored(120));
  auto v = RunFerrySucceeding({"verify", "--archive", s.mirror_archive, "--json"}, "verify mirror");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->out.find("\"unopened\":true"), std::string::npos) << v->out;
  EXPECT_EQ(v->out.find("\"unopened\":0"), v->out.find("\"unopened\":")) << v->out;
  unsetenv(storage::kKeyFileEnv);
  EXPECT_TRUE(std::filesystem::exists(s.mirror_archive + "/ENCRYPTED"));
  for (const std::string& archive : {s.archive, s.mirror_archive}) {
    EXPECT_EQ(FilesContaining(archive, canary), std::vector<std::string>{}) << "plaintext in " << archive;
  }
  std::filesystem::remove_all(*key_dir);
}

// A `ferry retention` or `ferry backup` on the mirror's archive holds a source's snapshot
// store: the mirror waits for it (logging why) instead of stopping, then imports the snapshot.
TEST(KafkaMirrorTest, MirrorWaitsForItsSnapshotStoreLock) {
  Regions s = Start();
  ASSERT_TRUE(s.kafka && s.pg && s.redis && s.ferry && s.mirror);
  const std::string snapshots = s.mirror_archive + "/streams/main/snapshots";
  std::filesystem::create_directories(snapshots);
  const int lock = open((snapshots + "/LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(lock, 0);
  ASSERT_EQ(flock(lock, LOCK_EX | LOCK_NB), 0);  // as `ferry retention` would
  ASSERT_TRUE(RunFerrySucceeding({"backup", "--config", s.config, "--source", "main"}, "backup"));
  EXPECT_TRUE(WaitFor([&] { return s.mirror->Log().find("event=snapshot_store_locked") != std::string::npos; }, 60))
      << s.mirror->Log();
  EXPECT_EQ(s.mirror->Log().find("event=snapshot_imported id=", s.mirror->Log().find("event=snapshot_store_locked")),
            std::string::npos) << "imported while the store was locked";
  close(lock);
  WaitUntilArchived(*s.pg);
  EXPECT_TRUE(s.WaitMirrored(120));
  EXPECT_NE(s.mirror->Log().find("event=snapshot_imported id=", s.mirror->Log().find("event=snapshot_store_locked")),
            std::string::npos) << s.mirror->Log();
}

}  // namespace
}  // namespace ferry::testing

namespace ferry::testing {
namespace {

std::string Rows(const LocalPostgres& pg) { return Q(pg, "select count(*) || '|' || coalesce(sum(length(v)), 0) from t"); }

TEST(KafkaMirrorTest, WarmStandbyPostgresFollowsTheMirrorAndPromotes) {
  Regions s = Start();
  ASSERT_TRUE(s.kafka && s.pg && s.redis && s.ferry && s.mirror);
  Q(*s.pg, "insert into t (v) select md5(g::text) from generate_series(1, 1000) g");
  WaitUntilArchived(*s.pg);
  ASSERT_TRUE(s.WaitMirrored(60));

  const std::string data = s.dir + "/standby";
  ASSERT_TRUE(RunFerrySucceeding({"restore", "postgres", "--archive", s.mirror_archive, "--source", "main", "--latest",
                                  "--standby", "--to", data},
                                 "restore --standby"));
  ASSERT_TRUE(std::filesystem::exists(data + "/standby.signal"));
  auto standby = LocalPostgres::StartExisting(data);
  ASSERT_TRUE(standby.ok()) << standby.status();
  EXPECT_EQ(Q(**standby, "select pg_is_in_recovery()"), "t");
  EXPECT_TRUE(WaitFor([&] { return Rows(**standby) == Rows(*s.pg); }, 60)) << Rows(**standby) << " vs " << Rows(*s.pg);

  // Writes in the primary region reach the standby through Kafka and the mirror's archive.
  Q(*s.pg, "insert into t (v) select md5(g::text) from generate_series(1, 500) g");
  Q(*s.pg, "create table after_standby (id int)");
  Q(*s.pg, "insert into after_standby values (42)");
  Q(*s.pg, "select pg_switch_wal()");
  WaitUntilArchived(*s.pg);
  EXPECT_TRUE(WaitFor([&] { return Rows(**standby) == Rows(*s.pg); }, 90)) << Rows(**standby) << " vs " << Rows(*s.pg);

  // Promoted, it is a primary with the primary's tables.
  Q(**standby, "select pg_promote()");
  EXPECT_TRUE(WaitFor([&] { return Q(**standby, "select pg_is_in_recovery()") == "f"; }, 60));
  EXPECT_EQ(Rows(**standby), Rows(*s.pg));
  EXPECT_EQ(Q(**standby, "select id from after_standby"), "42");
  Q(**standby, "insert into t (v) values ('written after promotion')");
}

// ack = "local+kafka": the flush position PostgreSQL hears never passes what Kafka has
// acknowledged, while the write position (local archiving) goes on.
TEST(KafkaAckTest, LocalPlusKafkaFlushNeverPassesKafka) {
  Regions s = Start("ack = \"local+kafka\"\n");
  ASSERT_TRUE(s.kafka && s.pg && s.redis && s.ferry && s.mirror);
  WaitUntilArchived(*s.pg);  // Kafka up: flushed means shipped
  auto positions = [&] {
    const std::string row = Q(*s.pg, "select write_lsn || ' ' || flush_lsn from pg_stat_replication "
                                     "where application_name = 'ferry_main'");
    const size_t space = row.find(' ');
    auto w = pipeline::Lsn::Parse(row.substr(0, space));
    auto f = pipeline::Lsn::Parse(space == std::string::npos ? "" : row.substr(space + 1));
    return std::make_pair(w.value_or(pipeline::Lsn()), f.value_or(pipeline::Lsn()));
  };
  s.SetLeaders(-1);  // Kafka down
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Q(*s.pg, "insert into t (v) select md5(g::text) from generate_series(1, 2000) g");
  const auto l1 = pipeline::Lsn::Parse(Q(*s.pg, "select pg_current_wal_lsn()"));
  ASSERT_TRUE(l1.ok());
  ASSERT_TRUE(WaitFor([&] { return positions().first >= *l1; }, 30)) << "ferry did not archive while Kafka was down";
  for (int i = 0; i < 20; ++i) {
    const auto [written, flushed] = positions();
    EXPECT_LT(flushed, *l1) << "flush " << flushed.ToString() << " passed what Kafka acknowledged";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  s.SetLeaders(2);  // Kafka back: shipped, then acknowledged
  EXPECT_TRUE(WaitFor([&] { return positions().second >= *l1; }, 60)) << s.ferry->Log();
  ASSERT_TRUE(s.WaitMirrored(60));
  // ls of the running service's archive names its Kafka, for other processes to connect.
  auto ls = RunFerrySucceeding({"ls", "--archive", s.archive, "--json"}, "ls");
  ASSERT_TRUE(ls);
  EXPECT_NE(ls->out.find(absl::StrCat("\"kafka\":{\"bootstrap\":\"", s.kafka->bootstrap(), "\"}")), std::string::npos)
      << ls->out;
}

// `ferry kafka-mock` as a process of its own: prints a bootstrap address that Kafka's own
// tooling (kcat) can list, and exits 0 on SIGTERM.
TEST(KafkaMockTest, ProcessServesTheKafkaProtocol) {
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    execl(FERRY_BINARY, FERRY_BINARY, "kafka-mock", "--brokers", "2", nullptr);
    _exit(127);
  }
  close(out[1]);
  std::string line;
  char c;
  while (read(out[0], &c, 1) == 1 && c != '\n') line += c;
  EXPECT_NE(line.find("127.0.0.1:"), std::string::npos) << line;
  EXPECT_NE(line.find(','), std::string::npos) << "two brokers, two addresses: " << line;
  local::RunOptions ro;
  ro.timeout_seconds = 30;
  auto listed = local::RunCommand({"kcat", "-b", line, "-L", "-m", "10"}, ro);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->exit_code, 0) << listed->err;
  EXPECT_NE(listed->out.find("2 brokers"), std::string::npos) << listed->out;
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // Nothing on stdout but the address.
  std::string rest;
  while (read(out[0], &c, 1) == 1) rest += c;
  close(out[0]);
  EXPECT_EQ(rest, "");
}

// apply_redis: the mirror feeds a standby Redis as its primary would; through a restart of the
// mirror it continues with PSYNC, and after the load it holds the primary's data exactly.
TEST(KafkaMirrorTest, WarmStandbyRedisFollowsTheMirror) {
  auto standby = LocalRedis::Start({});
  ASSERT_TRUE(standby.ok()) << standby.status();
  auto port = local::FindFreeLoopbackPort();
  ASSERT_TRUE(port.ok());
  Regions s = Start("", absl::StrCat("apply_redis = \"", (*standby)->Address(), "\"\n\n[http]\nlisten = \"127.0.0.1:",
                                     *port, "\"\n"));
  ASSERT_TRUE(s.kafka && s.pg && s.redis && s.ferry && s.mirror);
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::thread load([&] { Load(s, &stop, &rounds); });
  // A failed ASSERT returns early: the load still stops and is joined (a joinable thread's
  // destructor would abort the whole test binary).
  const std::unique_ptr<std::thread, std::function<void(std::thread*)>> join_load(&load, [&](std::thread* t) {
    stop = true;
    if (t->joinable()) t->join();
  });
  ASSERT_TRUE(WaitFor([&] { return rounds >= 30; }, 60));
  ASSERT_TRUE(WaitFor([&] { return (*standby)->Command({"GET", "k10"}).value_or("") == "10"; }, 60))
      << "standby Redis: " << (*standby)->Command({"INFO", "replication"}).value_or("?") << "\nmirror log:\n"
      << s.mirror->Log() << "\nferry log:\n" << s.ferry->Log();
  ASSERT_TRUE(s.mirror->Kill9().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(s.mirror->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  stop = true;
  load.join();
  ASSERT_TRUE(local::WaitReplicaAcked(*s.redis, 30).ok());
  const auto primary = local::RedisDigest(*s.redis);
  ASSERT_TRUE(primary.ok()) << primary.status();
  std::string got;
  EXPECT_TRUE(WaitFor([&] {
    got = local::RedisDigest(**standby).value_or("");
    return got == *primary;
  }, 90)) << got << " vs " << *primary << "\nmirror log:\n" << s.mirror->Log();
  EXPECT_EQ((*standby)->Command({"ROLE"}).value_or("").substr(0, 5), "slave");
  // The mirror's own /metrics: where each stream stands, and the frame lag.
  httplib::Client http("127.0.0.1", *port);
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics) << "no /metrics from the mirror";
  const std::string key = "ferry_mirror_position{source=\"cache\",stream=\"redis-commands\"} ";
  const size_t at = metrics->body.find(key);
  ASSERT_NE(at, std::string::npos) << metrics->body;
  EXPECT_GT(std::stoull(metrics->body.substr(at + key.size())), 1000u) << metrics->body;
  EXPECT_NE(metrics->body.find("ferry_mirror_frame_lag_seconds{quantile=\"0.99\"}"), std::string::npos);
  const std::string log = s.mirror->Log();
  EXPECT_NE(log.find("sync=full"), std::string::npos) << log;
  EXPECT_NE(log.find("sync=partial"), std::string::npos) << "a restarted mirror should continue, not resync:\n" << log;
  // Promoted, it takes writes.
  ASSERT_TRUE((*standby)->Command({"REPLICAOF", "NO", "ONE"}).ok());
  EXPECT_TRUE((*standby)->Command({"SET", "after", "promotion"}).ok());
}

}  // namespace
}  // namespace ferry::testing

namespace ferry::testing {
namespace {

// The metric names an expression or a rule file uses: ferry_... words.
void CollectMetricNames(const std::string& text, std::set<std::string>* names) {
  for (size_t at = text.find("ferry_"); at != std::string::npos; at = text.find("ferry_", at)) {
    size_t end = at;
    while (end < text.size() && (std::islower(static_cast<unsigned char>(text[end])) || text[end] == '_')) ++end;
    // "ferry_kafka_connected." in prose is the name without the dot; a label value such as
    // ferry_main (an application name) never appears in the kit.
    names->insert(text.substr(at, end - at));
    at = end;
  }
}

// The families a /metrics page declares ("# TYPE name kind"), with a histogram's series.
std::set<std::string> ExportedNames(const std::string& page) {
  std::set<std::string> names;
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (!absl::ConsumePrefix(&line, "# TYPE ")) continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() != 2) continue;
    names.insert(f[0]);
    if (f[1] == "histogram") {
      for (const char* s : {"_bucket", "_sum", "_count"}) names.insert(f[0] + s);
    }
  }
  return names;
}

// The operators' kit in ops/: promtool accepts the alert rules and their unit tests pass (each
// alert fires on its series, with its rendered text); the Grafana dashboard is JSON whose panels
// all have queries; and every metric the rules and the dashboard name is one that a running
// `ferry run` (PostgreSQL, Redis, Kafka, after a drill) or `ferry mirror` exports.
TEST(OpsKitTest, AlertRulesAndDashboardUseOnlyWhatFerryExports) {
  const std::string ops = std::string(FERRY_TESTDATA_DIR) + "/../../ops";
  const std::string rules = ops + "/prometheus/ferry-alerts.yml";
  for (const std::vector<std::string>& cmd :
       {std::vector<std::string>{"promtool", "check", "rules", rules},
        std::vector<std::string>{"promtool", "test", "rules", ops + "/prometheus/ferry-alerts-test.yml"}}) {
    auto r = local::RunCommand(cmd);
    ASSERT_TRUE(r.ok()) << r.status();  // promtool comes from Debian's prometheus (install-deps.sh)
    EXPECT_EQ(r->exit_code, 0) << absl::StrJoin(cmd, " ") << "\n" << r->out << r->err;
  }
  std::set<std::string> used;
  {
    std::ifstream in(rules);
    CollectMetricNames(std::string(std::istreambuf_iterator<char>(in), {}), &used);
  }
  std::ifstream dash_file(ops + "/grafana/ferry-dashboard.json");
  const std::string dash_text((std::istreambuf_iterator<char>(dash_file)), {});
  rapidjson::Document dash;
  dash.Parse(dash_text.c_str());
  ASSERT_FALSE(dash.HasParseError()) << "ferry-dashboard.json is not JSON";
  ASSERT_TRUE(dash.HasMember("panels") && dash["panels"].IsArray() && dash["panels"].Size() > 0);
  for (const auto& panel : dash["panels"].GetArray()) {
    ASSERT_TRUE(panel.HasMember("targets") && panel["targets"].IsArray() && panel["targets"].Size() > 0)
        << panel["title"].GetString();
    for (const auto& t : panel["targets"].GetArray()) CollectMetricNames(t["expr"].GetString(), &used);
  }
  ASSERT_GE(used.size(), 15u);

  auto run_port = local::FindFreeLoopbackPort();
  auto mirror_port = local::FindFreeLoopbackPort();
  ASSERT_TRUE(run_port.ok() && mirror_port.ok());
  Regions s = Start(absl::StrCat("\n[http]\nlisten = \"127.0.0.1:", *run_port, "\"\n"));
  ASSERT_TRUE(s.kafka && s.pg && s.redis && s.ferry && s.mirror);
  // The mirror's [http] (its config ends with [mirror]).
  ASSERT_TRUE(s.mirror->Terminate().ok());
  std::ofstream(s.mirror_config, std::ios::app) << "\n[http]\nlisten = \"127.0.0.1:" << *mirror_port << "\"\n";
  ASSERT_TRUE(s.mirror->Start().ok());
  ASSERT_TRUE(RunFerrySucceeding({"drill", "--config", s.config}, "drill"));
  Q(*s.pg, "insert into t (v) values ('x')");
  httplib::Client run("127.0.0.1", *run_port), mirror("127.0.0.1", *mirror_port);
  std::string run_page, mirror_page;
  ASSERT_TRUE(WaitFor([&] {
    auto a = run.Get("/metrics");
    auto b = mirror.Get("/metrics");
    run_page = a ? a->body : "";
    mirror_page = b ? b->body : "";
    return absl::StrContains(run_page, "ferry_drill_success{") && absl::StrContains(mirror_page, "ferry_mirror_lag_seconds{");
  }, 60)) << run_page << "\n---\n" << mirror_page << "\n" << s.mirror->Log();
  std::set<std::string> exported = ExportedNames(run_page);
  exported.merge(ExportedNames(mirror_page));
  for (const std::string& name : used) {
    EXPECT_EQ(exported.count(name), 1u) << name << " is used by ops/ but ferry does not export it";
  }
}

}  // namespace
}  // namespace ferry::testing
