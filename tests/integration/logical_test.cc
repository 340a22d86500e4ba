// Logical change stream: a real PostgreSQL 15 streams pgoutput into ferry's pg-changes stream;
// the events reach librdkafka's mock cluster as Debezium envelopes (read back with kcat), and
// `ferry mirror` applies them to a standby database that must equal the primary.
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <rapidjson/document.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cross_region/kafka.h"
#include "local/local_postgres.h"
#include "local/pg_tools.h"
#include "local/process.h"
#include "tests/fixtures/ferry_process.h"
#include "tests/fixtures/pg_cluster.h"

namespace ferry::testing {
namespace {

using local::LocalPostgres;

// A primary, the mock cluster and `ferry run` with a logical slot (and /metrics on http_port).
struct Rig {
  std::string dir, archive, config;
  int http_port = 0;
  std::unique_ptr<cross_region::MockCluster> kafka;
  std::unique_ptr<LocalPostgres> pg;
  std::unique_ptr<FerryService> ferry;
  bool ok() const { return pg != nullptr && kafka != nullptr && ferry != nullptr; }
};

// `setup_sql` runs before ferry starts (its rows are the initial snapshot), on a server of
// PostgreSQL `major`.
// `extra` goes into the config's top level, `source_extra` into the source's table.
Rig StartRig(const std::string& setup_sql, std::vector<std::string> settings = {}, const std::string& extra = "",
             int major = 15, const std::string& source_extra = "") {
  Rig r;
  auto dir = local::MakeTempDir("ferry-logical-test");
  EXPECT_TRUE(dir.ok()) << dir.status();
  if (!dir.ok()) return r;
  r.dir = *dir;
  r.archive = r.dir + "/archive";
  MakeArchiveDir(r.archive);
  local::LocalPostgresOptions po;
  po.settings = std::move(settings);
  po.major = major;
  auto pg = LocalPostgres::Create(po);
  EXPECT_TRUE(pg.ok()) << pg.status();
  if (!pg.ok()) return r;
  r.pg = std::move(*pg);
  if (!setup_sql.empty()) Q(*r.pg, setup_sql);
  auto kafka = cross_region::MockCluster::Start(1);
  EXPECT_TRUE(kafka.ok()) << kafka.status();
  if (!kafka.ok()) return r;
  r.kafka = std::move(*kafka);
  auto port = local::FindFreeLoopbackPort();
  EXPECT_TRUE(port.ok()) << port.status();
  r.http_port = port.value_or(0);
  r.config = r.dir + "/ferry.toml";
  std::ofstream(r.config) << "region = \"eu\"\ndrill_every = \"0s\"\n[http]\nlisten = \"127.0.0.1:" << r.http_port
                          << "\"\n[archive]\npath = \"" << r.archive
                          << "\"\nsegment_mb = 4\n\n[kafka]\nbrokers = \"" << r.kafka->bootstrap() << "\"\n" << extra
                          << "\n[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"" << r.pg->Conninfo()
                          << "\"\nscheduled_backups = false\nlogical_slot = \"ferry_main_cdc\"\n" << source_extra;
  r.ferry = std::make_unique<FerryService>(r.config, r.dir + "/ferry.log");
  EXPECT_TRUE(r.ferry->Start().ok());
  return r;
}

// The slot has confirmed everything the primary has written so far.
bool WaitSlotCaughtUp(const LocalPostgres& pg, int seconds = 30) {
  const std::string target = Q(pg, "select pg_current_wal_lsn()");
  return WaitFor([&] {
    auto r = pg.Query(absl::StrCat("select confirmed_flush_lsn >= '", target,
                                   "' from pg_replication_slots where slot_name = 'ferry_main_cdc'"));
    return r.ok() && *r == "t";
  }, seconds);
}

// Every message of `topic` (all partitions) as kcat's JSON envelope: key, payload (null for
// a tombstone), partition, offset.
std::vector<rapidjson::Document> ReadTopic(const Rig& r, const std::string& topic) {
  std::vector<rapidjson::Document> out;
  auto res = local::RunCommand({"kcat", "-C", "-b", r.kafka->bootstrap(), "-t", topic, "-o", "beginning", "-e", "-q",
                                "-J"});
  EXPECT_TRUE(res.ok() && res->exit_code == 0) << (res.ok() ? res->err : res.status().ToString());
  if (!res.ok()) return out;
  for (absl::string_view line : absl::StrSplit(res->out, '\n', absl::SkipEmpty())) {
    rapidjson::Document d;
    d.Parse(line.data(), line.size());
    EXPECT_FALSE(d.HasParseError()) << line;
    if (!d.HasParseError()) out.push_back(std::move(d));
  }
  return out;
}

// The Debezium envelopes of a topic in commit order (by source.lsn: one table's events may
// spread over partitions by key). Tombstones are counted apart.
struct TopicEvents {
  std::vector<rapidjson::Document> values;
  std::vector<std::string> tombstone_keys;
};
TopicEvents Events(const Rig& r, const std::string& table) {
  TopicEvents t;
  std::vector<std::pair<std::pair<uint64_t, int>, rapidjson::Document>> sorted;
  for (rapidjson::Document& m : ReadTopic(r, "ferry.eu.main.public." + table)) {
    if (m["payload"].IsNull()) {
      t.tombstone_keys.push_back(m["key"].GetString());
      continue;
    }
    rapidjson::Document v;
    v.Parse(m["payload"].GetString());
    EXPECT_FALSE(v.HasParseError()) << m["payload"].GetString();
    if (v.HasParseError()) continue;
    // A key change is a delete and a create at the same LSN, under different keys (so maybe
    // in different partitions): the delete comes first.
    const uint64_t lsn = v["source"]["lsn"].GetUint64();
    sorted.emplace_back(std::make_pair(lsn, std::string(v["op"].GetString()) == "c" ? 1 : 0), std::move(v));
  }
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [k, v] : sorted) t.values.push_back(std::move(v));
  return t;
}

std::string Json(const rapidjson::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsString()) return v.GetString();
  if (v.IsBool()) return v.GetBool() ? "true" : "false";
  if (v.IsInt64()) return absl::StrCat(v.GetInt64());
  if (v.IsDouble()) return absl::StrCat(v.GetDouble());
  if (v.IsArray()) {
    std::string s = "[";
    for (const auto& e : v.GetArray()) absl::StrAppend(&s, s.size() > 1 ? "," : "", Json(e));
    return s + "]";
  }
  return "?";
}

// `ferry changes` for the rig's archive: one Debezium envelope per line, whole transactions in
// commit order.
std::vector<rapidjson::Document> ArchivedChanges(const Rig& r) {
  std::vector<rapidjson::Document> out;
  auto changes = RunFerrySucceeding({"changes", "--archive", r.archive, "--source", "main"}, "changes");
  if (!changes) return out;
  for (absl::string_view line : absl::StrSplit(changes->out, '\n', absl::SkipEmpty())) {
    rapidjson::Document d;
    d.Parse(line.data(), line.size());
    EXPECT_FALSE(d.HasParseError()) << line;
    if (!d.HasParseError()) out.push_back(std::move(d));
  }
  return out;
}

std::vector<std::string> Keys(const rapidjson::Value& row) {
  std::vector<std::string> keys;
  for (const auto& m : row.GetObject()) keys.push_back(m.name.GetString());
  return keys;
}

// Every major, each with the highest pgoutput protocol it speaks (2 on 14, 3 on 15, 4 with
// parallel streaming on 16+): the same events, field by field; transactions larger than
// logical_decoding_work_mem, streamed before they end, arrive whole or not at all; on 17+
// the slot is made with FAILOVER when the config asks.
class LogicalMajorsTest : public ::testing::TestWithParam<int> {};

TEST_P(LogicalMajorsTest, RowChangesBecomeDebeziumEvents) {
  Rig r = StartRig(
      "create table typed (id int primary key, i2 smallint, i8 bigint, f8 float8, n numeric(10,2), b boolean, "
      "t text, j jsonb, ts timestamp, tstz timestamptz, d date, u uuid, by bytea, ia int[], ta text[]);"
      "insert into typed values (1, 2, 9000000000, 1.5, 12.34, true, 'snap', '{\"a\": 1}', "
      "'2026-11-24 10:00:00.123456', '2026-11-24 10:00:00+02', '2026-11-24', "
      "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x0102ff', '{1,NULL,3}', '{\"x y\",z}');"
      "create table fullt (id int primary key, v text); alter table fullt replica identity full;"
      "create table toasty (id int primary key, other int, payload text);"
      "alter table toasty alter column payload set storage external;"
      "create table big (id int primary key, v text);",
      {"logical_decoding_work_mem = '64kB'"}, "", GetParam(),
      GetParam() >= 17 ? "logical_slot_failover = true\n" : "");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(WaitSlotCaughtUp(*r.pg)) << r.ferry->Log();
  Q(*r.pg, "insert into typed (id, t) values (2, 'two')");
  Q(*r.pg, "update typed set t = 'deux' where id = 2");
  Q(*r.pg, "update typed set id = 3 where id = 2");  // a key change
  Q(*r.pg, "delete from typed where id = 3");
  Q(*r.pg, "insert into fullt values (1, 'a'); update fullt set v = 'b' where id = 1; delete from fullt where id = 1");
  Q(*r.pg, "insert into fullt values (2, 'c'); truncate fullt");
  Q(*r.pg, "insert into toasty values (1, 1, repeat('x', 5000)); update toasty set other = 2 where id = 1");
  ASSERT_TRUE(WaitSlotCaughtUp(*r.pg)) << r.ferry->Log();

  TopicEvents typed;
  ASSERT_TRUE(WaitFor([&] {
    typed = Events(r, "typed");
    return typed.values.size() >= 6;
  }, 30)) << "events on typed: " << typed.values.size() << "\n" << r.ferry->Log();
  ASSERT_EQ(typed.values.size(), 6u);
  // The snapshot's read, typed as Debezium's JSON converter types them.
  const auto& read = typed.values[0];
  EXPECT_EQ(Json(read["op"]), "r");
  EXPECT_EQ(Json(read["source"]["snapshot"]), "last");
  EXPECT_TRUE(read["before"].IsNull());
  const auto& a = read["after"];
  EXPECT_EQ(Json(a["id"]), "1");
  EXPECT_EQ(Json(a["i2"]), "2");
  EXPECT_EQ(Json(a["i8"]), "9000000000");
  EXPECT_EQ(Json(a["f8"]), "1.5");
  EXPECT_EQ(Json(a["n"]), "12.34");
  EXPECT_TRUE(a["n"].IsString());
  EXPECT_EQ(Json(a["b"]), "true");
  EXPECT_EQ(Json(a["t"]), "snap");
  EXPECT_EQ(Json(a["j"]), "{\"a\": 1}");
  EXPECT_EQ(Json(a["ts"]), "1795514400123456");          // MicroTimestamp
  EXPECT_EQ(Json(a["tstz"]), "2026-11-24T08:00:00Z");     // ZonedTimestamp, in UTC
  EXPECT_EQ(Json(a["d"]), "20781");                       // days since 1970-01-01
  EXPECT_EQ(Json(a["u"]), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  EXPECT_EQ(Json(a["by"]), "AQL/");                       // base64 of 01 02 ff
  EXPECT_EQ(Json(a["ia"]), "[1,null,3]");
  EXPECT_EQ(Json(a["ta"]), "[x y,z]");
  EXPECT_EQ(Json(read["source"]["db"]), "postgres");
  EXPECT_EQ(Json(read["source"]["schema"]), "public");
  EXPECT_EQ(Json(read["source"]["table"]), "typed");
  EXPECT_EQ(Json(read["source"]["connector"]), "postgresql");
  EXPECT_EQ(Json(read["source"]["name"]), "ferry.eu.main");

  // insert, update (DEFAULT identity: before is null), then the key change as delete + create.
  EXPECT_EQ(Json(typed.values[1]["op"]), "c");
  EXPECT_EQ(Json(typed.values[1]["after"]["t"]), "two");
  EXPECT_TRUE(typed.values[1]["after"]["i8"].IsNull());
  EXPECT_EQ(Json(typed.values[1]["source"]["snapshot"]), "false");
  EXPECT_TRUE(typed.values[1]["source"]["txId"].IsUint());
  EXPECT_GT(typed.values[1]["source"]["ts_ms"].GetInt64(), 1700000000000);
  EXPECT_EQ(Json(typed.values[2]["op"]), "u");
  EXPECT_TRUE(typed.values[2]["before"].IsNull());
  EXPECT_EQ(Json(typed.values[2]["after"]["t"]), "deux");
  EXPECT_EQ(Json(typed.values[3]["op"]), "d");
  EXPECT_EQ(Json(typed.values[3]["before"]["id"]), "2");
  EXPECT_TRUE(typed.values[3]["after"].IsNull());
  EXPECT_EQ(Json(typed.values[4]["op"]), "c");
  EXPECT_EQ(Json(typed.values[4]["after"]["id"]), "3");
  EXPECT_EQ(Json(typed.values[4]["after"]["t"]), "deux");
  EXPECT_EQ(Json(typed.values[5]["op"]), "d");
  EXPECT_EQ(Json(typed.values[5]["before"]["id"]), "3");
  // A tombstone follows each delete, keyed like it.
  std::sort(typed.tombstone_keys.begin(), typed.tombstone_keys.end());
  EXPECT_EQ(typed.tombstone_keys, (std::vector<std::string>{"{\"id\":2}", "{\"id\":3}"}));

  // REPLICA IDENTITY FULL: the old row travels with updates and deletes; truncate is 't'.
  TopicEvents full = Events(r, "fullt");
  ASSERT_EQ(full.values.size(), 5u);
  EXPECT_EQ(Json(full.values[0]["op"]), "c");
  EXPECT_EQ(Json(full.values[1]["op"]), "u");
  EXPECT_EQ(Json(full.values[1]["before"]["v"]), "a");
  EXPECT_EQ(Json(full.values[1]["after"]["v"]), "b");
  EXPECT_EQ(Json(full.values[2]["op"]), "d");
  EXPECT_EQ(Json(full.values[2]["before"]["v"]), "b");
  EXPECT_EQ(Json(full.values[3]["op"]), "c");
  EXPECT_EQ(Json(full.values[4]["op"]), "t");
  EXPECT_TRUE(full.values[4]["before"].IsNull() && full.values[4]["after"].IsNull());

  // An UPDATE that leaves an out-of-line value alone: marked, never a silent null.
  TopicEvents toasty = Events(r, "toasty");
  ASSERT_EQ(toasty.values.size(), 2u);
  EXPECT_EQ(Json(toasty.values[0]["after"]["payload"]), std::string(5000, 'x'));
  EXPECT_EQ(Json(toasty.values[1]["after"]["payload"]), "__debezium_unavailable_value");
  EXPECT_EQ(Json(toasty.values[1]["after"]["other"]), "2");

  // The archive holds the same events: `ferry changes` renders them from it.
  auto changes = RunFerrySucceeding({"changes", "--archive", r.archive, "--source", "main", "--topic-prefix", "ferry.eu"},
                                    "changes");
  ASSERT_TRUE(changes);
  std::vector<std::string> lines = absl::StrSplit(changes->out, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 6u + 5u + 2u) << changes->out;
  EXPECT_TRUE(RunFerrySucceeding({"verify", "--archive", r.archive}, "verify"));

  // /metrics: the change stream is a series of its own, its position an LSN, and the events
  // Kafka acknowledged are counted (13 envelopes and 3 tombstones).
  httplib::Client http("127.0.0.1", r.http_port);
  std::string body;
  EXPECT_TRUE(WaitFor([&] {
    auto got = http.Get("/metrics");
    body = got ? got->body : "";
    return body.find("ferry_change_events_shipped_total{source=\"main\",kind=\"postgres-changes\"} 16") !=
           std::string::npos;
  }, 10)) << body;
  EXPECT_NE(body.find("ferry_source_up{source=\"main\",kind=\"postgres-changes\"} 1"), std::string::npos) << body;
  const std::string key = "ferry_synced_position{source=\"main\",kind=\"postgres-changes\"} ";
  const size_t at = body.find(key);
  ASSERT_NE(at, std::string::npos) << body;
  auto confirmed = pipeline::Lsn::Parse(Q(*r.pg, "select confirmed_flush_lsn from pg_replication_slots where slot_name = 'ferry_main_cdc'"));
  ASSERT_TRUE(confirmed.ok());
  const uint64_t synced = std::stoull(body.substr(at + key.size()));
  EXPECT_GT(synced, 0x1000000u);  // an LSN, not the shifted stream position
  EXPECT_LE(synced, confirmed->value());
  if (GetParam() >= 17) {
    EXPECT_EQ(Q(*r.pg, "select failover from pg_replication_slots where slot_name = 'ferry_main_cdc'"), "t");
  }

  // Streamed while in progress: one transaction that commits, one that rolls back.
  Q(*r.pg, "insert into big select g, repeat('x', 100) from generate_series(1, 3000) g");
  Q(*r.pg, "begin; insert into big select g, 'r' from generate_series(100001, 103000) g; rollback");
  Q(*r.pg, "insert into big values (200001, 'after')");
  ASSERT_TRUE(WaitSlotCaughtUp(*r.pg)) << r.ferry->Log();
  std::vector<int64_t> big;
  for (const auto& e : ArchivedChanges(r)) {
    if (std::string(e["source"]["table"].GetString()) == "big") big.push_back(e["after"]["id"].GetInt64());
  }
  ASSERT_EQ(big.size(), 3001u) << "PostgreSQL " << GetParam();
  for (int64_t i = 0; i < 3000; ++i) ASSERT_EQ(big[i], i + 1);
  EXPECT_EQ(big.back(), 200001);
}

INSTANTIATE_TEST_SUITE_P(Majors, LogicalMajorsTest, ::testing::Values(14, 15, 16, 17, 18),
                         [](const ::testing::TestParamInfo<int>& info) { return absl::StrCat("PostgreSQL", info.param); });

TEST(LogicalTest, LargeTransactionsAndSchemaChangesArriveWholeAndInOrder) {
  // 64kB of decoded changes and the server streams the transaction while it is in progress.
  Rig r = StartRig("create table big (id int primary key, v text); create table s (id int primary key, a int)",
                   {"logical_decoding_work_mem = '64kB'"});
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(WaitSlotCaughtUp(*r.pg)) << r.ferry->Log();
  // The peer: test_decoding through pg_recvlogical, from the same point.
  Q(*r.pg, "select pg_create_logical_replication_slot('peer', 'test_decoding')");
  Q(*r.pg, "insert into big select g, repeat('x', 100) from generate_series(1, 20000) g");
  Q(*r.pg, "begin; insert into big select g, 'r' from generate_series(100001, 105000) g; rollback");
  // The savepoint's rows take the transaction past max_record_bytes: some of them are spilled
  // to disk before the rollback drops them.
  Q(*r.pg, "begin; insert into big select g, 'a' from generate_series(200001, 203000) g; savepoint s1; "
           "insert into big select g, 'b' from generate_series(300001, 312000) g; rollback to s1; "
           "insert into big values (400001, 'c'); commit");
  Q(*r.pg, "insert into s values (1, 1)");
  Q(*r.pg, "alter table s add column b text; insert into s values (2, 2, 'new')");
  Q(*r.pg, "alter table s drop column a; insert into s values (3, 'newer'); update s set b = 'x' where id = 1");
  Q(*r.pg, "update big set v = 'y' where id <= 500; delete from big where id > 19900 and id <= 20000");
  const std::string end = Q(*r.pg, "select pg_current_wal_lsn()");
  // WAL that touches no published table: the slot must still confirm past it (the idle
  // feedback), or it would hold WAL back for good.
  Q(*r.pg, "select pg_switch_wal(); select txid_current(); checkpoint");
  ASSERT_TRUE(WaitSlotCaughtUp(*r.pg)) << "the slot does not advance while idle\n" << r.ferry->Log();
  EXPECT_NE(r.ferry->Log().find("event=transaction_spilled"), std::string::npos) << r.ferry->Log();

  std::vector<rapidjson::Document> events = ArchivedChanges(r);
  std::vector<int64_t> big_inserts;
  std::map<std::string, int> ops;
  std::vector<const rapidjson::Document*> s_events;
  for (const auto& e : events) {
    const std::string table = e["source"]["table"].GetString();
    ops[table + "/" + e["op"].GetString()]++;
    if (table == "big" && std::string(e["op"].GetString()) == "c") big_inserts.push_back(e["after"]["id"].GetInt64());
    if (table == "s") s_events.push_back(&e);
  }
  // The streamed transaction whole and in order, the rolled-back one and the rolled-back
  // savepoint absent.
  ASSERT_EQ(big_inserts.size(), 20000u + 3001u) << r.ferry->Log();
  for (int64_t i = 0; i < 20000; ++i) ASSERT_EQ(big_inserts[i], i + 1);
  for (int64_t i = 0; i < 3000; ++i) ASSERT_EQ(big_inserts[20000 + i], 200001 + i);
  EXPECT_EQ(big_inserts.back(), 400001);
  EXPECT_EQ(ops["big/u"], 500);
  EXPECT_EQ(ops["big/d"], 100);
  // Each event has the table's shape at its change.
  ASSERT_EQ(s_events.size(), 4u);
  EXPECT_EQ(Keys((*s_events[0])["after"]), (std::vector<std::string>{"id", "a"}));
  EXPECT_EQ(Keys((*s_events[1])["after"]), (std::vector<std::string>{"id", "a", "b"}));
  EXPECT_EQ(Keys((*s_events[2])["after"]), (std::vector<std::string>{"id", "b"}));
  EXPECT_EQ(Json((*s_events[2])["after"]["b"]), "newer");
  EXPECT_EQ(Json((*s_events[3])["op"]), "u");
  EXPECT_EQ(Keys((*s_events[3])["after"]), (std::vector<std::string>{"id", "b"}));

  // The same workload through pg_recvlogical + test_decoding: the same number of changes.
  const std::string out = r.dir + "/recvlogical.txt";
  local::RunOptions o;
  o.timeout_seconds = 120;
  auto peer = local::RunCommand({"pg_recvlogical", "-d", r.pg->Conninfo(), "-S", "peer", "--start", "-E", end, "-f",
                                 out, "--no-loop"}, o);
  ASSERT_TRUE(peer.ok() && peer->exit_code == 0) << (peer.ok() ? peer->err : peer.status().ToString());
  std::ifstream in(out);
  int peer_changes = 0;
  for (std::string line; std::getline(in, line);) peer_changes += absl::StartsWith(line, "table ") ? 1 : 0;
  int ferry_changes = 0;
  for (const auto& [k, n] : ops) ferry_changes += n;
  EXPECT_EQ(ferry_changes, peer_changes);
  EXPECT_EQ(peer_changes, 20000 + 3001 + 4 + 500 + 100);
}

// A pgbench run of `script` against the primary (a custom workload: no pgbench tables).
void Workload(const Rig& r, const std::string& script, int seconds) {
  const std::string path = absl::StrCat(r.dir, "/load-", seconds, ".sql");
  std::ofstream(path) << script;
  local::RunOptions o;
  o.timeout_seconds = seconds + 120;
  auto res = local::RunCommand({"pgbench", "-h", "127.0.0.1", "-p", std::to_string(r.pg->port()), "-U", "postgres", "-n",
                                "-f", path, "-c", "4", "-j", "2", "-T", std::to_string(seconds), "postgres"},
                               o);
  ASSERT_TRUE(res.ok() && res->exit_code == 0) << (res.ok() ? res->err : res.status().ToString());
}

TEST(LogicalTest, StandbyDatabaseFollowsThroughMirrorRestarts) {
  Rig r = StartRig(
      "create table acct (id int primary key, bal int not null, note text);"
      "insert into acct select g, 0, 'seed' from generate_series(1, 2000) g;"
      "create table logt (k int, v text); alter table logt replica identity full;"
      "insert into logt select g % 50, 'l' || g from generate_series(1, 300) g;"
      // Identified by a unique index other than the primary key.
      "create table idx (id int primary key, email text not null unique, n int);"
      "alter table idx replica identity using index idx_email_key;"
      "insert into idx select g, 'u' || g || '@x', 0 from generate_series(1, 200) g;");
  ASSERT_TRUE(r.ok());
  local::LocalPostgresOptions so;
  auto standby = LocalPostgres::Create(so);
  ASSERT_TRUE(standby.ok()) << standby.status();
  const std::string mirror_config = r.dir + "/mirror.toml";
  std::ofstream(mirror_config) << "region = \"us\"\n[archive]\npath = \"" << r.dir << "/mirror\"\nsegment_mb = 4\n\n"
                               << "[kafka]\nbrokers = \"" << r.kafka->bootstrap() << "\"\ntopic_prefix = \"ferry.eu\"\n\n"
                               << "[mirror]\nsources = [\"main\"]\napply_postgres = \"" << (*standby)->Conninfo() << "\"\n";
  auto mirror = std::make_unique<FerryService>(mirror_config, r.dir + "/mirror.log", "mirror");
  ASSERT_TRUE(mirror->Start().ok());

  const std::string load =
      "\\set id random(1, 3000)\n"
      "insert into acct values (:id, 1, 'new') on conflict (id) do update set bal = acct.bal + 1;\n"
      "\\set d random(1, 3000)\n"
      "delete from acct where id = :d and bal % 5 = 3;\n"
      "\\set k random(1, 60)\n"
      "insert into logt values (:k, 'w');\n"
      "delete from logt where ctid = (select ctid from logt where k = :k limit 1);\n";
  Workload(r, load, 4);
  // The mirror dies mid-apply; its restart resumes after the last transaction the standby
  // committed.
  ASSERT_TRUE(mirror->Kill9().ok());
  Q(*r.pg, "alter table acct add column tag text; update acct set tag = 't' || id where id % 3 = 0");
  ASSERT_TRUE(mirror->Start().ok());
  Workload(r, load, 4);
  Q(*r.pg, "alter table acct drop column note; update acct set bal = bal + 100 where id < 50");
  // Under USING INDEX: primary keys changed (the old row found by its email), rows deleted by
  // email, emails changed; then a column renamed, which keeps its values.
  Q(*r.pg, "update idx set id = id + 10000 where id % 10 = 0; delete from idx where id % 7 = 0; "
           "update idx set email = 'v' || email where id % 3 = 0; update idx set n = id");
  Q(*r.pg, "alter table idx rename column n to m; update idx set m = m + 1 where id < 20");

  const std::vector<std::string> tables = {"acct", "logt", "idx"};
  std::string primary, copy;
  const bool equal = WaitFor([&] {
    auto a = local::TableChecksums(*r.pg, tables);
    auto b = local::TableChecksums(**standby, tables);
    primary = a.value_or("?");
    copy = b.value_or("-");
    return a.ok() && b.ok() && *a == *b;
  }, 90);
  EXPECT_TRUE(equal) << "primary: " << primary << "\nstandby: " << copy << "\nmirror log:\n" << mirror->Log()
                     << "\nferry log:\n" << r.ferry->Log();
  EXPECT_EQ(Q(**standby, "select string_agg(attname, ',' order by attnum) from pg_attribute "
                         "where attrelid = 'acct'::regclass and attnum > 0 and not attisdropped"),
            "id,bal,tag");
  EXPECT_EQ(Q(**standby, "select string_agg(attname, ',' order by attnum) from pg_attribute "
                         "where attrelid = 'idx'::regclass and attnum > 0 and not attisdropped"),
            "id,email,m");
  // The applied position is recorded with the rows.
  EXPECT_EQ(Q(**standby, "select count(*) from ferry.apply_state where source = 'main' and end_lsn > '0/0'"), "1");
  auto stopped = mirror->Terminate();
  ASSERT_TRUE(stopped.ok() && *stopped == 0) << mirror->Log();
}

// An event larger than the producer may send: shipping stops with a line saying what to
// change, and the archive (ack = "local") still has the event.
TEST(LogicalTest, AnEventTooLargeForKafkaNamesTheSettingAndLosesNothing) {
  Rig r = StartRig("create table docs (id int primary key, body text)", {},
                   "max_message_bytes = 1024\n[kafka.properties]\n\"message.max.bytes\" = \"4096\"\n");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(WaitSlotCaughtUp(*r.pg)) << r.ferry->Log();
  Q(*r.pg, "insert into docs values (1, 'small'); insert into docs values (2, repeat('x', 6000))");
  ASSERT_TRUE(WaitSlotCaughtUp(*r.pg)) << r.ferry->Log();
  EXPECT_TRUE(WaitFor([&] { return r.ferry->Log().find("raise message.max.bytes") != std::string::npos; }, 20))
      << r.ferry->Log();
  const auto events = ArchivedChanges(r);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(Json(events[1]["after"]["body"]).size(), 6000u);
}

// Changes per "table/op" in pg_recvlogical's test_decoding output, from slot `slot` up to `end`.
std::map<std::string, int> PeerChanges(const Rig& r, const std::string& slot, const std::string& end) {
  std::map<std::string, int> out;
  const std::string path = absl::StrCat(r.dir, "/", slot, ".txt");
  local::RunOptions o;
  o.timeout_seconds = 120;
  auto peer = local::RunCommand({"pg_recvlogical", "-d", r.pg->Conninfo(), "-S", slot, "--start", "-E", end, "-f", path,
                                 "--no-loop"}, o);
  EXPECT_TRUE(peer.ok() && peer->exit_code == 0) << (peer.ok() ? peer->err : peer.status().ToString());
  std::ifstream in(path);
  // "table public.acct: INSERT: id[integer]:1 ..."
  for (std::string line; std::getline(in, line);) {
    if (!absl::StartsWith(line, "table public.")) continue;
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(' ', 3));
    if (f.size() < 3) continue;
    const std::string table = f[1].substr(7, f[1].size() - 8);  // "public.acct:" -> "acct"
    const std::string op = f[2] == "INSERT:" ? "c" : f[2] == "UPDATE:" ? "u" : f[2] == "DELETE:" ? "d" : f[2];
    out[table + "/" + op]++;
  }
  return out;
}

TEST(LogicalTest, KilledMidStreamResumesWithoutLossOrDuplicates) {
  Rig r = StartRig("create table acct (id int primary key, bal int not null)");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(WaitSlotCaughtUp(*r.pg)) << r.ferry->Log();
  Q(*r.pg, "select pg_create_logical_replication_slot('peer', 'test_decoding')");
  const std::string load =
      "\\set id random(1, 500)\n"
      "insert into acct values (:id, 1) on conflict (id) do update set bal = acct.bal + 1;\n"
      "\\set d random(1, 500)\n"
      "delete from acct where id = :d and bal % 4 = 1;\n";
  // kill -9 twice while the load runs; each restart resumes from the archive's end. (ferry is
  // started from this thread: it dies with the thread that forked it, PR_SET_PDEATHSIG.)
  std::thread load_thread([&] { Workload(r, load, 5); });
  for (int i = 0; i < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    EXPECT_TRUE(r.ferry->Kill9().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_TRUE(r.ferry->Start().ok());
  }
  load_thread.join();
  // And one large transaction after the restarts.
  Q(*r.pg, "insert into acct select g, 0 from generate_series(1001, 1500) g");
  const std::string end = Q(*r.pg, "select pg_current_wal_lsn()");
  ASSERT_TRUE(WaitSlotCaughtUp(*r.pg, 60)) << r.ferry->Log();

  std::map<std::string, int> ours;
  for (const auto& e : ArchivedChanges(r)) {
    ours[absl::StrCat(e["source"]["table"].GetString(), "/", e["op"].GetString())]++;
  }
  const std::map<std::string, int> peer = PeerChanges(r, "peer", end);
  EXPECT_EQ(ours, peer) << r.ferry->Log();
  EXPECT_GT(peer.at("acct/c"), 500);
  EXPECT_TRUE(RunFerrySucceeding({"verify", "--archive", r.archive}, "verify"));
}

}  // namespace
}  // namespace ferry::testing
