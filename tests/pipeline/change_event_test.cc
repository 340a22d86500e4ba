// pg-changes records: round trips, every truncation rejected, and the assembler's handling of
// multi-part and cut-off transactions.
#include "pipeline/change_event.h"

#include <gtest/gtest.h>

namespace ferry::pipeline {
namespace {

ChangeValue Text(std::string s) { return ChangeValue{ChangeValue::Kind::kText, std::move(s)}; }

ChangeBatch Sample(uint32_t xid, int rows) {
  ChangeBatch b;
  b.xid = xid;
  b.commit_lsn = 0x1000 + xid;
  b.end_lsn = 0x1100 + xid;
  b.commit_ts = 1795514400123456;
  b.database = "app";
  ChangeRelation rel{16390, "public", "t", 'f',
                     {{"id", 23, -1, true, true, ""}, {"mood", 16396, -1, true, false, "public.mood"}}};
  b.relations.push_back(rel);
  for (int i = 0; i < rows; ++i) {
    ChangeEvent e;
    e.op = i % 2 == 0 ? ChangeOp::kInsert : ChangeOp::kUpdate;
    e.lsn = 0x900 + i;
    e.has_after = true;
    e.after = {Text(std::to_string(i)), i == 1 ? ChangeValue{ChangeValue::Kind::kUnchanged, ""} : Text("happy")};
    if (e.op == ChangeOp::kUpdate) {
      e.has_before = true;
      e.before = {Text("0"), ChangeValue{}};
    }
    b.events.push_back(e);
  }
  ChangeEvent t;
  t.op = ChangeOp::kTruncate;
  t.truncated = {0};
  t.truncate_options = 3;
  b.events.push_back(t);
  ChangeEvent m;
  m.op = ChangeOp::kMessage;
  m.prefix = "app";
  m.content = std::string("\0\1binary", 8);
  b.events.push_back(m);
  return b;
}

TEST(ChangeEventTest, RoundTrips) {
  const ChangeBatch b = Sample(7, 3);
  auto back = DecodeChangeBatch(EncodeChangeBatch(b));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, b);
}

TEST(ChangeEventTest, EveryTruncationAndTrailingByteIsDataLoss) {
  const std::string bytes = EncodeChangeBatch(Sample(7, 2));
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = DecodeChangeBatch(bytes.substr(0, n));
    EXPECT_TRUE(absl::IsDataLoss(r.status())) << "prefix of " << n << " bytes";
  }
  EXPECT_TRUE(absl::IsDataLoss(DecodeChangeBatch(bytes + "x").status()));
}

TEST(ChangeEventTest, EventNamingAMissingRelationIsDataLoss) {
  ChangeBatch b = Sample(7, 1);
  b.events[0].relation = 5;
  EXPECT_TRUE(absl::IsDataLoss(DecodeChangeBatch(EncodeChangeBatch(b)).status()));
}

TEST(ChangeEventTest, PositionsOrderPartsBeforeTheirCommit) {
  const uint64_t prev = ChangePosition(0x5000, 0);
  EXPECT_LT(prev, prev + 1);
  EXPECT_LT(prev + 1, ChangePosition(0x5001, 0));
  EXPECT_EQ(ChangePositionLsn(prev + 7), 0x5000u);
}

TEST(ChangeEventTest, AssemblerJoinsPartsAndDropsACutOffTransaction) {
  ChangeAssembler a;
  ChangeBatch out;
  // A transaction cut off after its first part (a restart), then sent again in two parts.
  ChangeBatch cut = Sample(9, 2);
  cut.last = false;
  ASSERT_FALSE(*a.Add(EncodeChangeBatch(cut), &out));
  ChangeBatch p1 = Sample(9, 2);
  p1.last = false;
  ChangeBatch p2 = Sample(9, 1);
  p2.first = false;
  ASSERT_FALSE(*a.Add(EncodeChangeBatch(p1), &out));
  auto done = a.Add(EncodeChangeBatch(p2), &out);
  ASSERT_TRUE(done.ok() && *done);
  EXPECT_EQ(out.events.size(), p1.events.size() + p2.events.size());
  // Relation indexes of the second part point at its own copy of the relation.
  EXPECT_EQ(out.events.back().relation, 0u);  // a message: no relation
  EXPECT_EQ(out.events[p1.events.size()].relation, 1u);
  EXPECT_EQ(out.events[p1.events.size() + 1].truncated, std::vector<uint32_t>{1});
  EXPECT_EQ(out.relations.size(), 2u);
  // A continuation without its start (reading from the middle) is skipped.
  ChangeAssembler b;
  EXPECT_FALSE(*b.Add(EncodeChangeBatch(p2), &out));
}

}  // namespace
}  // namespace ferry::pipeline
