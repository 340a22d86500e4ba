// Debezium rendering of change events, read back as JSON: topics, keys, the envelope, typed
// values, a primary-key change as delete + tombstone + create, truncates, skipped messages.
#include "cross_region/debezium.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace ferry::cross_region {
namespace {

using pipeline::ChangeBatch;
using pipeline::ChangeEvent;
using pipeline::ChangeOp;
using pipeline::ChangeValue;

ChangeValue Text(const std::string& s) { return {ChangeValue::Kind::kText, s}; }
ChangeValue Null() { return {ChangeValue::Kind::kNull, ""}; }

// public.accounts (id int4 primary key, balance numeric, active bool, note text) and one
// transaction's events.
ChangeBatch Accounts(std::vector<ChangeEvent> events) {
  ChangeBatch b;
  b.xid = 742;
  b.commit_lsn = 0x16B3A28;
  b.end_lsn = 0x16B3A58;
  b.commit_ts = 1795514400123456;
  b.database = "shop";
  b.relations.push_back({16390, "public", "accounts", 'd',
                         {{"id", 23, -1, true, true, ""},
                          {"balance", 1700, -1, false, false, ""},
                          {"active", 16, -1, false, false, ""},
                          {"note", 25, -1, false, false, ""}}});
  b.events = std::move(events);
  return b;
}

ChangeEvent Insert(int id) {
  ChangeEvent e;
  e.op = ChangeOp::kInsert;
  e.lsn = 0x16B3900;
  e.has_after = true;
  e.after = {Text(std::to_string(id)), Text("12.50"), Text("t"), Null()};
  return e;
}

rapidjson::Document Json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  EXPECT_FALSE(d.HasParseError()) << text;
  return d;
}

const DebeziumOptions kOptions{"ferry", "pg", true};

TEST(DebeziumTest, AnInsertIsACreateWithTypedValuesKeyedByThePrimaryKey) {
  std::vector<KafkaRecord> out;
  RenderDebezium(Accounts({Insert(1)}), kOptions, 1795514401000, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].topic, "ferry.pg.public.accounts");
  EXPECT_EQ(out[0].topic, TableTopic(kOptions, "public", "accounts"));
  EXPECT_FALSE(out[0].tombstone);
  rapidjson::Document key = Json(out[0].key);
  EXPECT_EQ(key["id"].GetInt(), 1);
  rapidjson::Document v = Json(out[0].value);
  EXPECT_STREQ(v["op"].GetString(), "c");
  EXPECT_EQ(v["ts_ms"].GetInt64(), 1795514401000);
  EXPECT_TRUE(v["before"].IsNull());
  const auto& after = v["after"];
  EXPECT_EQ(after["id"].GetInt(), 1);
  EXPECT_STREQ(after["balance"].GetString(), "12.50");  // decimal.handling.mode=string
  EXPECT_TRUE(after["active"].GetBool());
  EXPECT_TRUE(after["note"].IsNull());
  const auto& source = v["source"];
  EXPECT_STREQ(source["connector"].GetString(), "postgresql");
  EXPECT_STREQ(source["name"].GetString(), "ferry.pg");
  EXPECT_STREQ(source["db"].GetString(), "shop");
  EXPECT_STREQ(source["schema"].GetString(), "public");
  EXPECT_STREQ(source["table"].GetString(), "accounts");
  EXPECT_EQ(source["txId"].GetUint(), 742u);
  EXPECT_EQ(source["lsn"].GetUint64(), 0x16B3900u);  // the change's own LSN
  EXPECT_EQ(source["ts_ms"].GetInt64(), 1795514400123);
  EXPECT_STREQ(source["snapshot"].GetString(), "false");
}

TEST(DebeziumTest, ADeleteIsFollowedByATombstoneUnlessTurnedOff) {
  ChangeEvent del;
  del.op = ChangeOp::kDelete;
  del.has_before = true;
  del.before = {Text("7"), Null(), Null(), Null()};
  std::vector<KafkaRecord> out;
  RenderDebezium(Accounts({del}), kOptions, 0, &out);
  ASSERT_EQ(out.size(), 2u);
  rapidjson::Document v = Json(out[0].value);
  EXPECT_STREQ(v["op"].GetString(), "d");
  EXPECT_EQ(v["before"]["id"].GetInt(), 7);
  EXPECT_TRUE(v["after"].IsNull());
  EXPECT_EQ(v["source"]["lsn"].GetUint64(), 0x16B3A28u);  // no own LSN: the commit's
  EXPECT_TRUE(out[1].tombstone);
  EXPECT_EQ(out[1].key, out[0].key);

  out.clear();
  DebeziumOptions quiet = kOptions;
  quiet.tombstones = false;
  RenderDebezium(Accounts({del}), quiet, 0, &out);
  EXPECT_EQ(out.size(), 1u);
}

TEST(DebeziumTest, APrimaryKeyChangeIsDeleteTombstoneCreate) {
  ChangeEvent up;
  up.op = ChangeOp::kUpdate;
  up.has_before = true;
  up.before = {Text("1"), Null(), Null(), Null()};
  up.has_after = true;
  up.after = {Text("2"), Text("0"), Text("f"), Text("moved")};
  std::vector<KafkaRecord> out;
  RenderDebezium(Accounts({up}), kOptions, 0, &out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_STREQ(Json(out[0].value)["op"].GetString(), "d");
  EXPECT_EQ(Json(out[0].key)["id"].GetInt(), 1);
  EXPECT_TRUE(out[1].tombstone);
  EXPECT_EQ(Json(out[1].key)["id"].GetInt(), 1);
  rapidjson::Document create = Json(out[2].value);
  EXPECT_STREQ(create["op"].GetString(), "c");
  EXPECT_EQ(Json(out[2].key)["id"].GetInt(), 2);
  EXPECT_FALSE(create["after"]["active"].GetBool());
  EXPECT_STREQ(create["after"]["note"].GetString(), "moved");
}

TEST(DebeziumTest, AnUpdateUnderDefaultIdentityHasNoBeforeAndMessagesAreNotPublished) {
  ChangeEvent up;
  up.op = ChangeOp::kUpdate;
  up.has_after = true;
  up.after = {Text("1"), Text("3.00"), Text("t"), Text("x")};
  ChangeEvent message;
  message.op = ChangeOp::kMessage;
  message.prefix = "audit";
  message.content = "hello";
  std::vector<KafkaRecord> out;
  RenderDebezium(Accounts({up, message}), kOptions, 0, &out);
  ASSERT_EQ(out.size(), 1u);
  rapidjson::Document v = Json(out[0].value);
  EXPECT_STREQ(v["op"].GetString(), "u");
  EXPECT_TRUE(v["before"].IsNull());
  EXPECT_STREQ(v["after"]["balance"].GetString(), "3.00");
}

TEST(DebeziumTest, SnapshotReadsMarkTheLastRowAndHaveNoTransaction) {
  ChangeBatch b = Accounts({Insert(1), Insert(2)});
  b.kind = ChangeBatch::Kind::kSnapshot;
  for (ChangeEvent& e : b.events) e.op = ChangeOp::kRead;
  std::vector<KafkaRecord> out;
  RenderDebezium(b, kOptions, 0, &out);
  ASSERT_EQ(out.size(), 2u);
  rapidjson::Document first = Json(out[0].value), last = Json(out[1].value);
  EXPECT_STREQ(first["op"].GetString(), "r");
  EXPECT_STREQ(first["source"]["snapshot"].GetString(), "true");
  EXPECT_STREQ(last["source"]["snapshot"].GetString(), "last");
  EXPECT_TRUE(first["source"]["txId"].IsNull());
}

TEST(DebeziumTest, ATruncateIsOneKeylessEventPerTable) {
  ChangeEvent t;
  t.op = ChangeOp::kTruncate;
  t.truncated = {0};
  std::vector<KafkaRecord> out;
  RenderDebezium(Accounts({t}), kOptions, 0, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].key.empty());
  rapidjson::Document v = Json(out[0].value);
  EXPECT_STREQ(v["op"].GetString(), "t");
  EXPECT_TRUE(v["before"].IsNull());
  EXPECT_TRUE(v["after"].IsNull());
}

}  // namespace
}  // namespace ferry::cross_region
