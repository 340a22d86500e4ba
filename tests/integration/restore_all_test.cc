// One instant for PostgreSQL and Redis: a workload writes an order row to PostgreSQL and its
// cached copy to Redis; `ferry restore all --time Ti` gives both as they were at Ti, and
// `--mark` gives exactly the marked point, even with writes right after it.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <rapidjson/document.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/pg/server_version.h"
#include "local/local_postgres.h"
#include "local/local_redis.h"
#include "local/pg_tools.h"
#include "local/process.h"
#include "pipeline/endian.h"
#include "pipeline/frame.h"
#include "pipeline/position.h"
#include "restore/recover.h"
#include "storage/archive_keys.h"
#include "storage/durable_file.h"
#include "storage/segment_format.h"
#include "tests/fixtures/ferry_process.h"
#include "tests/fixtures/pg_cluster.h"
#include "tests/fixtures/scratch.h"

namespace ferry::testing {
namespace {

using local::LocalPostgres;
using local::LocalRedis;

struct Pair {
  std::string pg;     // "count|sum" of the orders table
  std::string redis;  // "count|sum" of the order:* keys
  bool operator==(const Pair& o) const { return pg == o.pg && redis == o.redis; }
};

std::ostream& operator<<(std::ostream& os, const Pair& p) { return os << "pg " << p.pg << ", redis " << p.redis; }

std::string RedisOrders(const LocalRedis& r) {
  auto keys = r.Command({"KEYS", "order:*"});
  EXPECT_TRUE(keys.ok()) << keys.status();
  int64_t count = 0, sum = 0;
  for (absl::string_view key : absl::StrSplit(keys.value_or(""), '\n', absl::SkipEmpty())) {
    int64_t v = 0;
    EXPECT_TRUE(absl::SimpleAtoi(r.Command({"GET", std::string(key)}).value_or(""), &v)) << key;
    ++count;
    sum += v;
  }
  return absl::StrCat(count, "|", sum);
}

Pair Orders(const LocalPostgres& pg, const LocalRedis& redis) {
  return {Q(pg, "select count(*) || '|' || coalesce(sum(amount), 0) from orders"), RedisOrders(redis)};
}

// Order `id`: the row first, then its cached copy (what an application does).
void WriteOrder(const LocalPostgres& pg, const LocalRedis& redis, int id) {
  Q(pg, absl::StrCat("insert into orders values (", id, ", ", id * 10, ")"));
  EXPECT_TRUE(redis.Command({"SET", absl::StrCat("order:", id), absl::StrCat(id * 10)}).ok());
}

struct Servers {
  std::string dir, archive, config;
  std::unique_ptr<LocalPostgres> pg;
  std::unique_ptr<LocalRedis> redis;
  std::unique_ptr<FerryService> ferry;
};

// `head` goes before every table of the config (top-level keys), `archive_extra` into [archive].
Servers Start(const std::string& archive_extra = "", const std::string& head = "", int major = 15) {
  Servers s;
  Primaries p = StartPrimaries("ferry-all-test", major);
  s.dir = p.dir;
  s.archive = s.dir + "/archive";
  MakeArchiveDir(s.archive);
  s.pg = std::move(p.pg);
  s.redis = std::move(p.redis);
  if (!s.pg || !s.redis) return s;
  Q(*s.pg, "create table orders (id int primary key, amount int)");
  s.config = s.dir + "/ferry.toml";
  std::ofstream(s.config) << head << "[archive]\npath = \"" << s.archive << "\"\nwriter = \"io_uring\"\n" << archive_extra << "\n"
                          << "[marks]\npause_redis = \"2s\"\n\n"
                          << "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"" << s.pg->Conninfo()
                          << "\"\nscheduled_backups = false\n\n"
                          << "[[source]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"" << s.redis->Address()
                          << "\"\nscheduled_backups = false\n";
  s.ferry = std::make_unique<FerryService>(s.config, s.dir + "/ferry.log");
  EXPECT_TRUE(s.ferry->Start().ok());
  EXPECT_TRUE(WaitFor([&] { return FerryFlush(*s.pg).valid(); }, 30)) << s.ferry->Log();
  EXPECT_TRUE(local::WaitReplicaAcked(*s.redis, 30).ok()) << s.ferry->Log();
  auto backup = RunFerry({"backup", "--config", s.config, "--source", "main"});
  EXPECT_TRUE(backup.ok() && backup->exit_code == 0) << (backup.ok() ? backup->out + backup->err : "");
  return s;
}

// Both primaries' writes so far are durable in the archive.
void WaitArchived(const Servers& s) {
  WaitUntilArchived(*s.pg);
  EXPECT_TRUE(local::WaitReplicaAcked(*s.redis, 30).ok());
}

// `ferry restore all <target> --to dir/name --start`, then the pair the restored servers hold.
Pair RestoreAll(const Servers& s, const std::string& name, const std::vector<std::string>& target) {
  const std::string to = s.dir + "/" + name;
  std::vector<std::string> args = {"restore", "all", "--archive", s.archive, "--to", to};
  args.insert(args.end(), target.begin(), target.end());
  if (!RunFerrySucceeding(args, name)) return {};
  auto pg = LocalPostgres::StartExisting(to + "/main");
  EXPECT_TRUE(pg.ok()) << pg.status();
  if (!pg.ok() || !restore::WaitForRecoveryEnd(**pg, 120).ok()) return {};
  local::LocalRedisOptions ro;
  ro.dir = to + "/cache";
  ro.args = {"--appendonly", "yes"};
  auto redis = LocalRedis::Start(ro);
  EXPECT_TRUE(redis.ok()) << redis.status();
  if (!redis.ok()) return {};
  return Orders(**pg, **redis);
}

class RestoreAllTest : public ::testing::TestWithParam<int> {};

TEST_P(RestoreAllTest, OneInstantAndAMarkForPostgresAndRedis) {
  Servers s = Start("", "", GetParam());
  ASSERT_TRUE(s.pg && s.redis && s.ferry);
  std::vector<Pair> expected;
  std::vector<std::string> times;
  int id = 0;
  for (int phase = 0; phase < 2; ++phase) {
    for (int i = 0; i < 10; ++i) WriteOrder(*s.pg, *s.redis, ++id);
    WaitArchived(s);
    expected.push_back(Orders(*s.pg, *s.redis));
    times.push_back(pipeline::FormatUnixMicros(pipeline::NowUnixMicros()));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_NE(expected[0], expected[1]);

  // A mark with writes right before and after it: restored exactly as marked.
  for (int i = 0; i < 5; ++i) WriteOrder(*s.pg, *s.redis, ++id);
  const Pair at_mark = Orders(*s.pg, *s.redis);
  auto mark = RunFerrySucceeding({"mark", "--config", s.config, "before-batch"}, "mark");
  ASSERT_TRUE(mark);
  EXPECT_NE(mark->out.find("Redis writes paused"), std::string::npos) << mark->out;
  for (int i = 0; i < 5; ++i) WriteOrder(*s.pg, *s.redis, ++id);

  // A second mark while a client keeps writing pairs: Redis never holds an order whose row
  // PostgreSQL lacks, and at most the one order in flight is only in PostgreSQL.
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int k = 1000; !stop; ++k) WriteOrder(*s.pg, *s.redis, k);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto busy = RunFerrySucceeding({"mark", "--config", s.config, "under-load"}, "mark under load");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  writer.join();
  ASSERT_TRUE(busy);
  WaitArchived(s);
  ASSERT_TRUE(s.ferry->Terminate().ok());

  auto ls = RunFerrySucceeding({"ls", "--archive", s.archive}, "ls");
  ASSERT_TRUE(ls);
  EXPECT_NE(ls->out.find("mark before-batch at"), std::string::npos) << ls->out;
  for (size_t i = 0; i < times.size(); ++i) {
    EXPECT_EQ(RestoreAll(s, absl::StrCat("t", i), {"--time", times[i]}), expected[i]) << "T" << i + 1;
  }
  EXPECT_EQ(RestoreAll(s, "mark", {"--mark", "before-batch"}), at_mark);
  const Pair loaded = RestoreAll(s, "busy", {"--mark", "under-load"});
  int64_t pg_count = 0, redis_count = 0;
  ASSERT_TRUE(absl::SimpleAtoi(loaded.pg.substr(0, loaded.pg.find('|')), &pg_count)) << loaded;
  ASSERT_TRUE(absl::SimpleAtoi(loaded.redis.substr(0, loaded.redis.find('|')), &redis_count)) << loaded;
  EXPECT_GE(pg_count, redis_count) << loaded;
  EXPECT_LE(pg_count - redis_count, 1) << loaded;
  EXPECT_GT(redis_count, 25) << "the writer made no progress before the mark: " << loaded;

  // A mark that does not exist: one line, exit 1, nothing written.
  auto missing = RunFerry({"restore", "all", "--archive", s.archive, "--mark", "nope", "--to", s.dir + "/nope"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->exit_code, 1);
  EXPECT_NE(missing->err.find("no mark \"nope\""), std::string::npos) << missing->err;
  EXPECT_FALSE(std::filesystem::exists(s.dir + "/nope/main"));
}

INSTANTIATE_TEST_SUITE_P(Majors, RestoreAllTest, ::testing::Values(15, client::pg::kNewestMajor),
                         [](const ::testing::TestParamInfo<int>& info) { return absl::StrCat("PostgreSQL", info.param); });

// Prometheus text format: "name{labels} value" per sample; comments and blank lines skipped.
std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    double v = 0;
    EXPECT_TRUE(space != absl::string_view::npos && absl::SimpleAtod(line.substr(space + 1), &v)) << line;
    out[std::string(line.substr(0, space))] = v;
  }
  return out;
}

// The largest file under `dir` whose name ends with `suffix`.
std::string Largest(const std::string& dir, const std::string& suffix) {
  std::string best;
  uintmax_t size = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    const std::string p = e.path().string();
    if (e.is_regular_file() && p.size() >= suffix.size() && p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        e.file_size() > size) {
      best = p;
      size = e.file_size();
    }
  }
  return best;
}

// Sums "unopened" over every stream of `ferry verify --archive A --json` (sealed frames
// checked by checksum only for want of their key); -1 when verify fails.
int64_t VerifyUnopened(const std::string& archive) {
  auto r = RunFerry({"verify", "--archive", archive, "--json"});
  if (!r.ok() || r->exit_code != 0) {
    ADD_FAILURE() << "verify: " << (r.ok() ? r->out + r->err : r.status().ToString());
    return -1;
  }
  rapidjson::Document d;
  d.Parse(r->out.c_str());
  if (d.HasParseError() || !d.IsObject()) return -1;
  int64_t unopened = 0;
  for (const auto& src : d["sources"].GetArray()) {
    for (const auto& st : src["streams"].GetArray()) unopened += st["unopened"].GetInt64();
  }
  return unopened;
}

// FERRY_KEY_FILE for the ferry commands this test runs ("" unsets it).
void SetKeyFileEnv(const std::string& path) {
  if (path.empty()) {
    unsetenv(storage::kKeyFileEnv);
  } else {
    setenv(storage::kKeyFileEnv, path.c_str(), 1);
  }
}

// Encryption at rest: an archive written under [archive] encryption_key_file holds no
// plaintext, restores with its key file and only with it, keeps reading frames of a rotated-
// out key, and a flipped bit whose checksums are recomputed is found by verify.
TEST(EncryptionTest, SealedArchiveRestoresOnlyWithItsKeysAndTamperingIsFound) {
  auto key_dir = local::MakeTempDir("ferry-keys");
  ASSERT_TRUE(key_dir.ok()) << key_dir.status();
  const std::string keys = *key_dir + "/archive.keys";
  const std::string key1 = absl::StrCat("1 ", std::string(64, '1'), "\n");
  const std::string key2 = absl::StrCat("2 ", std::string(32, 'a'), std::string(32, '7'), "\n");
  // Private, and the postgres user's: a restored server's restore_command reads it.
  auto write_keys = [&](const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
    ASSERT_EQ(chmod(path.c_str(), 0600), 0);
    ASSERT_TRUE(local::GiveToServerUser(path).ok());
  };
  write_keys(keys, key1);
  Servers s = Start(absl::StrCat("encryption_key_file = \"", keys, "\"\n"));
  ASSERT_TRUE(s.pg && s.redis && s.ferry);
  const std::string canary = "ferry-plaintext-canary";
  Q(*s.pg, absl::StrCat("create table notes (v text); insert into notes values ('", canary, "')"));
  ASSERT_TRUE(s.redis->Command({"SET", "note", canary}).ok());
  int id = 0;
  for (int i = 0; i < 10; ++i) WriteOrder(*s.pg, *s.redis, ++id);
  WaitArchived(s);
  // Rotation: a second key is added; new frames are sealed with it, old ones stay readable.
  ASSERT_TRUE(s.ferry->Terminate().ok());
  write_keys(keys, key1 + key2);
  ASSERT_TRUE(s.ferry->Start().ok());
  for (int i = 0; i < 10; ++i) WriteOrder(*s.pg, *s.redis, ++id);
  WaitArchived(s);
  const Pair expected = Orders(*s.pg, *s.redis);
  ASSERT_TRUE(s.ferry->Terminate().ok());

  EXPECT_TRUE(std::filesystem::exists(s.archive + "/ENCRYPTED"));
  EXPECT_EQ(FilesContaining(s.archive, canary), std::vector<std::string>{}) << "plaintext in the archive";

  // Without a key, verify checks every checksum and says how many frames it could not open.
  SetKeyFileEnv("");
  EXPECT_GT(VerifyUnopened(s.archive), 0);
  // With only one of the two keys, the other key's frames are named: both keys were used.
  const std::string only1 = *key_dir + "/only1.keys", only2 = *key_dir + "/only2.keys";
  write_keys(only1, key1);
  write_keys(only2, key2);
  for (const auto& [file, missing] : {std::pair{only1, 2}, std::pair{only2, 1}}) {
    SetKeyFileEnv(file);
    auto partial = RunFerry({"verify", "--archive", s.archive});
    ASSERT_TRUE(partial.ok());
    EXPECT_EQ(partial->exit_code, 1) << partial->out;
    EXPECT_NE(partial->err.find(absl::StrCat("encrypted with key ", missing, ", which ", file, " does not hold")),
              std::string::npos)
        << partial->err;
  }
  SetKeyFileEnv(keys);
  EXPECT_EQ(VerifyUnopened(s.archive), 0);
  // A different key that reuses id 1 is refused before anything is read or written with it.
  const std::string impostor = *key_dir + "/impostor.keys";
  write_keys(impostor, absl::StrCat("1 ", std::string(64, '9'), "\n"));
  SetKeyFileEnv(impostor);
  auto wrong = RunFerry({"verify", "--archive", s.archive});
  ASSERT_TRUE(wrong.ok());
  EXPECT_NE(wrong->exit_code, 0);
  EXPECT_NE(wrong->err.find("is not the key 1"), std::string::npos) << wrong->err;

  // Restoring needs the key, and says where to give it.
  SetKeyFileEnv("");
  auto keyless = RunFerry({"restore", "all", "--archive", s.archive, "--latest", "--to", s.dir + "/keyless"});
  ASSERT_TRUE(keyless.ok());
  EXPECT_NE(keyless->exit_code, 0);
  EXPECT_NE(keyless->err.find("FERRY_KEY_FILE"), std::string::npos) << keyless->err;
  SetKeyFileEnv(keys);
  EXPECT_EQ(RestoreAll(s, "keyed", {"--latest"}), expected);

  // A writer that lost its key never writes into the encrypted archive in the clear.
  SetKeyFileEnv("");
  std::string config = storage::ReadWholeFile(s.config).value_or("");
  config.replace(config.find("encryption_key_file"), config.find('\n', config.find("encryption_key_file")) -
                                                          config.find("encryption_key_file"), "");
  const std::string keyless_config = s.dir + "/keyless.toml";
  std::ofstream(keyless_config) << config;
  auto run = RunFerry({"run", "--config", keyless_config});
  ASSERT_TRUE(run.ok());
  EXPECT_NE(run->exit_code, 0);
  EXPECT_NE(run->err.find("is encrypted"), std::string::npos) << run->err;

  // One flipped bit in a sealed WAL frame, with both checksums recomputed: checksums alone
  // cannot see it, the seal does.
  const std::string seg = Largest(s.archive + "/streams/main/pg-wal", ".seg");
  ASSERT_FALSE(seg.empty());
  {
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    std::string header(pipeline::kFrameHeaderSize, '\0');
    f.seekg(storage::kSegmentHeaderSize);
    f.read(header.data(), header.size());
    auto h = pipeline::DecodeFrameHeader(header);
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_NE(h->key_id, 0);
    std::string payload(h->stored_len, '\0');
    f.read(payload.data(), payload.size());
    payload[payload.size() / 2] ^= 0x01;
    pipeline::PutLe64(header.data() + 64, pipeline::Checksum64(payload));
    pipeline::PutLe64(header.data() + 72, pipeline::Checksum64(absl::string_view(header.data(), 72)));
    f.seekp(storage::kSegmentHeaderSize);
    f.write(header.data(), header.size());
    f.write(payload.data(), payload.size());
  }
  SetKeyFileEnv("");
  EXPECT_GT(VerifyUnopened(s.archive), 0) << "without the key the damage is invisible";
  SetKeyFileEnv(keys);
  auto tampered = RunFerry({"verify", "--archive", s.archive});
  ASSERT_TRUE(tampered.ok());
  EXPECT_EQ(tampered->exit_code, 1);
  EXPECT_NE(tampered->err.find("authentication failed"), std::string::npos) << tampered->err;
  EXPECT_NE(tampered->err.find(seg), std::string::npos) << tampered->err;
  SetKeyFileEnv("");
  std::filesystem::remove_all(*key_dir);
}

// ferry drill restores both sources into scratch servers and passes on a healthy archive;
// a corrupted snapshot chunk, then a missing WAL segment, fail it with one line naming the
// source and the check.
TEST(DrillTest, PassesOnAHealthyArchiveAndNamesTheSourceAndCheckThatFails) {
  Servers s = Start("segment_mb = 1\n");
  ASSERT_TRUE(s.pg && s.redis && s.ferry);
  Pgbench(*s.pg, {"-i", "-s", "2", "-q"});
  for (int id = 1; id <= 20; ++id) WriteOrder(*s.pg, *s.redis, id);
  WaitArchived(s);
  ASSERT_TRUE(s.ferry->Terminate().ok());

  for (const char* target : {"latest", "random"}) {
    auto ok = RunFerrySucceeding({"drill", "--config", s.config, "--json", "--target", target}, target);
    ASSERT_TRUE(ok);
    EXPECT_NE(ok->out.find("\"ok\":true"), std::string::npos) << ok->out;
    EXPECT_NE(ok->out.find("\"check\":\"pg_amcheck\",\"ok\":true"), std::string::npos) << ok->out;
    EXPECT_NE(ok->out.find("\"source\":\"cache\""), std::string::npos) << ok->out;
  }
  auto table = RunFerrySucceeding({"drill", "--config", s.config}, "table");
  ASSERT_TRUE(table);
  EXPECT_NE(table->out.find("drill passed"), std::string::npos) << table->out;
  EXPECT_NE(table->out.find("rows in"), std::string::npos) << table->out;

  // A flipped byte inside a chunk of the base backup.
  const std::string pack = Largest(s.archive + "/streams/main/snapshots", ".pack");
  ASSERT_FALSE(pack.empty());
  const uint64_t middle = std::filesystem::file_size(pack) / 2;
  FlipByte(pack, middle);
  auto corrupt = RunFerry({"drill", "--config", s.config});
  ASSERT_TRUE(corrupt.ok());
  EXPECT_EQ(corrupt->exit_code, 1) << corrupt->out;
  EXPECT_NE(corrupt->err.find("source \"main\": check restore failed"), std::string::npos) << corrupt->err;
  EXPECT_NE(corrupt->err.find(".pack"), std::string::npos) << corrupt->err;
  FlipByte(pack, middle);  // healed

  // A WAL segment of the archive gone from the middle of what the restore needs.
  std::vector<std::string> segments;
  for (const auto& e : std::filesystem::directory_iterator(s.archive + "/streams/main/pg-wal")) {
    if (e.path().extension() == ".seg") segments.push_back(e.path().string());
  }
  std::sort(segments.begin(), segments.end());
  ASSERT_GE(segments.size(), 3u);
  std::filesystem::remove(segments[segments.size() - 2]);
  auto gap = RunFerry({"drill", "--config", s.config});
  ASSERT_TRUE(gap.ok());
  EXPECT_EQ(gap->exit_code, 1) << gap->out;
  EXPECT_NE(gap->err.find("source \"main\": check restore failed"), std::string::npos) << gap->err;
  EXPECT_NE(gap->err.find("WAL"), std::string::npos) << gap->err;
}

// The service's HTTP endpoint: /metrics (parsed as Prometheus text) shows both sources
// streaming, moves with the workload and shows the drill the service scheduled itself;
// /status is JSON; /healthz turns 503 within 10 s naming the source whose server stopped,
// while the other source's commits are still acknowledged, and 200 again once it is back.
TEST(ServiceHttpTest, MetricsStatusHealthAndScheduledDrill) {
  auto port = local::FindFreeLoopbackPort();
  ASSERT_TRUE(port.ok());
  Servers s = Start("", absl::StrCat("drill_every = \"1s\"\n[http]\nlisten = \"127.0.0.1:", *port, "\"\n\n"));
  ASSERT_TRUE(s.pg && s.redis && s.ferry);
  for (int id = 1; id <= 5; ++id) WriteOrder(*s.pg, *s.redis, id);
  WaitArchived(s);
  httplib::Client http("127.0.0.1", *port);
  auto get = [&](const char* path) {
    auto r = http.Get(path);
    return r ? std::make_pair(r->status, r->body) : std::make_pair(0, std::string());
  };
  EXPECT_EQ(get("/healthz"), std::make_pair(200, std::string("ok\n"))) << s.ferry->Log();
  const std::string metrics = get("/metrics").second;
  EXPECT_NE(metrics.find("ferry_source_up{source=\"main\",kind=\"postgres\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("ferry_source_up{source=\"cache\",kind=\"redis\"} 1"), std::string::npos) << metrics;
  const std::string synced = absl::StrCat("ferry_synced_position{source=\"main\",kind=\"postgres\"} ", FerryFlush(*s.pg).value());
  EXPECT_NE(metrics.find(synced), std::string::npos) << synced << "\n" << metrics;

  // The drill the service runs by itself (drill_every) shows up in /metrics.
  EXPECT_TRUE(WaitFor([&] {
    const std::string m = get("/metrics").second;
    return m.find("ferry_drill_success{source=\"main\"} 1") != std::string::npos &&
           m.find("ferry_drill_success{source=\"cache\"} 1") != std::string::npos;
  }, 120)) << get("/metrics").second << s.ferry->Log();
  EXPECT_NE(get("/metrics").second.find("ferry_drill_rto_seconds{source=\"main\"}"), std::string::npos);

  rapidjson::Document status;
  status.Parse(get("/status").second.c_str());
  ASSERT_TRUE(status.IsObject()) << get("/status").second;
  EXPECT_TRUE(status["healthy"].GetBool());
  EXPECT_EQ(status["sources"].Size(), 2u);
  EXPECT_TRUE(status["last_drill"].IsObject());

  auto status_ok = RunFerrySucceeding({"status", "--config", s.config}, "ferry status");
  ASSERT_TRUE(status_ok);
  EXPECT_NE(status_ok->out.find("healthy"), std::string::npos) << status_ok->out;
  auto check = RunFerrySucceeding({"config", "check", s.config}, "ferry config check");
  ASSERT_TRUE(check);
  EXPECT_NE(check->out.find("name = \"cache\""), std::string::npos) << check->out;

  // The metrics move as the workload moves.
  const auto before = ParseMetrics(get("/metrics").second);
  for (int id = 6; id <= 10; ++id) WriteOrder(*s.pg, *s.redis, id);
  WaitArchived(s);
  auto after = ParseMetrics(get("/metrics").second);
  const std::string main_synced = "ferry_synced_position{source=\"main\",kind=\"postgres\"}";
  const std::string cache_synced = "ferry_synced_position{source=\"cache\",kind=\"redis\"}";
  EXPECT_GT(after[main_synced], before.at(main_synced));
  EXPECT_GT(after[cache_synced], before.at(cache_synced));
  const std::string main_labels = "{source=\"main\",kind=\"postgres\"}";
  EXPECT_GT(after["ferry_frames_total" + main_labels], before.at("ferry_frames_total" + main_labels));
  EXPECT_GT(after["ferry_raw_bytes_total" + main_labels], before.at("ferry_raw_bytes_total" + main_labels));
  EXPECT_GT(after["ferry_compression_ratio" + main_labels], 1.0);  // WAL compresses
  EXPECT_GT(after["ferry_sync_seconds_count" + main_labels], before.at("ferry_sync_seconds_count" + main_labels));
  EXPECT_EQ(after["ferry_sync_seconds_bucket{source=\"main\",kind=\"postgres\",le=\"+Inf\"}"],
            after["ferry_sync_seconds_count" + main_labels]);

  const int redis_port = s.redis->port();
  ASSERT_TRUE(s.redis->Stop().ok());
  EXPECT_TRUE(WaitFor([&] { return get("/healthz").first == 503; }, 10)) << s.ferry->Log();
  const auto down = get("/healthz");
  EXPECT_NE(down.second.find("source cache down"), std::string::npos) << down.second;
  EXPECT_EQ(down.second.find("source main"), std::string::npos) << down.second;
  // One source down does not hold up the other: PostgreSQL's commits are still acknowledged.
  Q(*s.pg, "insert into orders values (100, 1000)");
  WaitUntilArchived(*s.pg);
  after = ParseMetrics(get("/metrics").second);
  EXPECT_EQ(after[main_synced], static_cast<double>(FerryFlush(*s.pg).value()));
  EXPECT_EQ(after["ferry_source_up{source=\"cache\",kind=\"redis\"}"], 0);
  auto status_down = RunFerry({"status", "--config", s.config});
  ASSERT_TRUE(status_down.ok());
  EXPECT_EQ(status_down->exit_code, 1) << status_down->out;
  EXPECT_NE(status_down->out.find("UNHEALTHY"), std::string::npos) << status_down->out;
  EXPECT_NE(status_down->out.find("source cache down"), std::string::npos) << status_down->out;

  // The server comes back (empty, on the same port): ferry resyncs and health returns.
  local::LocalRedisOptions again;
  again.port = redis_port;
  again.args = {"--repl-diskless-sync-delay", "0"};
  auto restarted = LocalRedis::Start(again);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_TRUE(WaitFor([&] { return get("/healthz").first == 200; }, 30)) << get("/healthz").second << s.ferry->Log();
}


// The crash loop: ferry is killed with kill -9 at random moments 20 times (seeded: the seed
// is printed, FERRY_CRASH_SEED=N replays a run) under pgbench and a writer of orders to both
// servers, and restarted each time. Whatever a primary saw acknowledged before a kill is in
// the archive after it; at the end the archive verifies (no gap, no duplicate) and a restore
// of both equals the primaries.
TEST(CrashLoopTest, TwentyKillsLoseNothingAcknowledged) {
  uint32_t seed = std::random_device{}();
  if (const char* env = std::getenv("FERRY_CRASH_SEED")) {
    ASSERT_TRUE(absl::SimpleAtoi(env, &seed)) << env;
  }
  std::cout << "crash loop seed " << seed << " (FERRY_CRASH_SEED=" << seed << " replays it)" << std::endl;
  RecordProperty("seed", static_cast<int>(seed));
  std::mt19937 rng(seed);

  Servers s = Start();
  ASSERT_TRUE(s.pg && s.redis && s.ferry);
  Pgbench(*s.pg, {"-i", "-s", "1", "-q"});
  std::atomic<int> orders{0};
  Repeat pgbench([&] { Pgbench(*s.pg, {"-T", "3", "-c", "2"}); });
  Repeat writer([&] { WriteOrder(*s.pg, *s.redis, ++orders); });

  int kills = 0;
  for (; kills < 20; ++kills) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(100, 1500)(rng)));
    const pipeline::Lsn pg_acked = FerryFlush(*s.pg);
    const int64_t redis_acked = local::ReplicaAckedOffset(*s.redis).value_or(-1);
    ASSERT_TRUE(s.ferry->Kill9().ok());
    // The archive as the killed process left it: it holds everything the primaries heard
    // acknowledged (the last ack each saw came from a sync that had completed).
    auto wal_end = pipeline::Lsn::Parse(ArchiveEnd(s.archive, "main", "pg-wal"));
    ASSERT_TRUE(wal_end.ok()) << "kill " << kills;
    EXPECT_GE(*wal_end, pg_acked) << "kill " << kills << " (seed " << seed << "): PostgreSQL saw "
                                  << pg_acked.ToString() << " acknowledged, the archive ends at " << wal_end->ToString();
    int64_t redis_end = -1;
    ASSERT_TRUE(absl::SimpleAtoi(ArchiveEnd(s.archive, "cache", "redis-commands"), &redis_end)) << "kill " << kills;
    EXPECT_GE(redis_end, redis_acked) << "kill " << kills << " (seed " << seed << ")";
    ASSERT_TRUE(s.ferry->Start().ok());
  }
  writer.Stop();
  pgbench.Stop();
  WaitArchived(s);
  const Pair expected = Orders(*s.pg, *s.redis);
  const std::string pgbench_sums = TableChecksums(*s.pg);
  auto code = s.ferry->Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << s.ferry->Log();
  EXPECT_EQ(kills, 20);
  EXPECT_GT(orders.load(), 50) << "the writer should have kept writing through the kills";

  auto verify = RunFerry({"verify", "--archive", s.archive});
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->exit_code, 0) << verify->out << verify->err;
  EXPECT_EQ(RestoreAll(s, "restored", {"--latest"}), expected);
  auto restored_pg = LocalPostgres::StartExisting(s.dir + "/restored/main");
  ASSERT_TRUE(restored_pg.ok()) << restored_pg.status();
  EXPECT_EQ(TableChecksums(**restored_pg), pgbench_sums);
}

}  // namespace
}  // namespace ferry::testing
