// Logical change stream: a real PostgreSQL 15 streams pgoutput into ferry's pg-changes stream;
// the events reach librdkafka's mock cluster as Debezium envelopes (read back with kcat), and
// `ferry mirror` applies them to a standby database that must equal the primary.
#include <filesystem>
#include <fstream>
#include <map>

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cross_region/kafka.h"
#include "tests/fixtures/ferry_process.h"
#include "tests/fixtures/pg_cluster.h"
#include "tools/sandbox/local_postgres.h"
#include "tools/sandbox/process.h"

namespace ferry::testing {
namespace {

using tools::LocalPostgres;

// A primary, the mock cluster and `ferry run` with a logical slot.
struct Rig {
  std::string dir, archive, config;
  std::unique_ptr<cross_region::MockCluster> kafka;
  std::unique_ptr<LocalPostgres> pg;
  std::unique_ptr<FerryService> ferry;
  bool ok() const { return pg != nullptr && kafka != nullptr && ferry != nullptr; }
};

// `setup_sql` runs before ferry starts (its rows are the initial snapshot).
Rig StartRig(const std::string& setup_sql, std::vector<std::string> settings = {}, const std::string& extra = "") {
  Rig r;
  auto dir = tools::MakeTempDir("ferry-logical-test");
  EXPECT_TRUE(dir.ok()) << dir.status();
  if (!dir.ok()) return r;
  r.dir = *dir;
  r.archive = r.dir + "/archive";
  tools::LocalPostgresOptions po;
  po.settings = std::move(settings);
  auto pg = LocalPostgres::Create(po);
  EXPECT_TRUE(pg.ok()) << pg.status();
  if (!pg.ok()) return r;
  r.pg = std::move(*pg);
  if (!setup_sql.empty()) Q(*r.pg, setup_sql);
  auto kafka = cross_region::MockCluster::Start(1);
  EXPECT_TRUE(kafka.ok()) << kafka.status();
  if (!kafka.ok()) return r;
  r.kafka = std::move(*kafka);
  r.config = r.dir + "/ferry.toml";
  std::ofstream(r.config) << "region = \"eu\"\ndrill_every = \"0s\"\n[archive]\npath = \"" << r.archive
                          << "\"\nsegment_mb = 4\n\n[kafka]\nbrokers = \"" << r.kafka->bootstrap() << "\"\n" << extra
                          << "\n[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"" << r.pg->Conninfo()
                          << "\"\nscheduled_backups = false\nlogical_slot = \"ferry_main_cdc\"\n";
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
  auto res = tools::RunCommand({"kcat", "-C", "-b", r.kafka->bootstrap(), "-t", topic, "-o", "beginning", "-e", "-q",
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

TEST(LogicalTest, RowChangesBecomeDebeziumEvents) {
  Rig r = StartRig(
      "create table typed (id int primary key, i2 smallint, i8 bigint, f8 float8, n numeric(10,2), b boolean, "
      "t text, j jsonb, ts timestamp, tstz timestamptz, d date, u uuid, by bytea, ia int[], ta text[]);"
      "insert into typed values (1, 2, 9000000000, 1.5, 12.34, true, 'snap', '{\"a\": 1}', "
      "'2026-11-24 10:00:00.123456', '2026-11-24 10:00:00+02', '2026-11-24', "
      "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x0102ff', '{1,NULL,3}', '{\"x y\",z}');"
      "create table fullt (id int primary key, v text); alter table fullt replica identity full;"
      "create table toasty (id int primary key, other int, payload text);"
      "alter table toasty alter column payload set storage external;");
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
}

}  // namespace
}  // namespace ferry::testing
