// pgoutput decoding against hand-built messages in PostgreSQL 15's layouts
// (docs/protocols.md, "pgoutput"), and the rejection of truncated ones.
#include "ingest/pg/pgoutput.h"

#include <limits>

#include <gtest/gtest.h>

namespace ferry::ingest::pg {
namespace {

class Msg {
 public:
  explicit Msg(char type) { s_.push_back(type); }
  Msg& I8(uint8_t v) { s_.push_back(static_cast<char>(v)); return *this; }
  Msg& I16(uint16_t v) { return I8(v >> 8).I8(v & 0xff); }
  Msg& I32(uint32_t v) { return I16(v >> 16).I16(v & 0xffff); }
  Msg& I64(uint64_t v) { return I32(v >> 32).I32(v & 0xffffffff); }
  Msg& Str(const std::string& v) { s_ += v; s_.push_back('\0'); return *this; }
  Msg& Text(const std::string& v) { I8('t').I32(static_cast<uint32_t>(v.size())); s_ += v; return *this; }
  const std::string& bytes() const { return s_; }

 private:
  std::string s_;
};

TEST(PgOutputTest, DecodesTransactionFraming) {
  auto b = ParsePgOutput(Msg('B').I64(0x16B3A28).I64(1000000).I32(742).bytes(), false);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->commit_lsn, 0x16B3A28u);
  EXPECT_EQ(b->ts, 1000000 + pipeline::kPgEpochUnixMicros);
  EXPECT_EQ(b->xid, 742u);
  // 'infinity' (and any time past it) saturates instead of overflowing (found by fuzz_pgoutput).
  auto inf = ParsePgOutput(Msg('B').I64(1).I64(0x7FFFFFFFFFFFFF00ull).I32(1).bytes(), false);
  ASSERT_TRUE(inf.ok()) << inf.status();
  EXPECT_EQ(inf->ts, std::numeric_limits<int64_t>::max());
  auto c = ParsePgOutput(Msg('C').I8(0).I64(0x16B3A28).I64(0x16B3A58).I64(5).bytes(), false);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->end_lsn, 0x16B3A58u);
  auto sc = ParsePgOutput(Msg('c').I32(9).I8(0).I64(0x10).I64(0x20).I64(5).bytes(), false);
  ASSERT_TRUE(sc.ok());
  EXPECT_EQ(sc->xid, 9u);
  EXPECT_EQ(sc->end_lsn, 0x20u);
  auto a = ParsePgOutput(Msg('A').I32(9).I32(10).bytes(), false);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->subxid, 10u);
}

TEST(PgOutputTest, DecodesRelationAndRowsInsideAStream) {
  const std::string rel = Msg('R').I32(77).I32(16390).Str("").Str("t").I8('d').I16(2)
                              .I8(1).Str("id").I32(23).I32(0xffffffff)
                              .I8(0).Str("v").I32(25).I32(0xffffffff).bytes();
  auto r = ParsePgOutput(rel, /*in_stream=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->xid, 77u);
  EXPECT_EQ(r->relation.schema, "pg_catalog");  // "" is pg_catalog
  ASSERT_EQ(r->relation.columns.size(), 2u);
  EXPECT_TRUE(r->relation.columns[0].key);
  EXPECT_EQ(r->relation.columns[1].typmod, -1);
  // An update that changed the key: 'K' old tuple, then the new one with an unchanged TOAST value.
  const std::string upd = Msg('U').I32(16390).I8('K').I16(2).Text("1").I8('n')
                              .I8('N').I16(2).Text("2").I8('u').bytes();
  auto u = ParsePgOutput(upd, false);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->old_kind, 'K');
  EXPECT_EQ(u->old_tuple[0].text, "1");
  EXPECT_EQ(u->new_tuple[1].kind, pipeline::ChangeValue::Kind::kUnchanged);
  // Truncate of two relations, CASCADE and RESTART IDENTITY.
  auto t = ParsePgOutput(Msg('T').I32(2).I8(3).I32(1).I32(2).bytes(), false);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->truncate_relids, (std::vector<uint32_t>{1, 2}));
  auto m = ParsePgOutput(Msg('M').I8(1).I64(0x99).Str("app").I32(3).I8('a').I8(0).I8('b').bytes(), false);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->content, std::string("a\0b", 3));
}

TEST(PgOutputTest, TruncatedOrUnknownMessagesAreDataLoss) {
  const std::string ins = Msg('I').I32(16390).I8('N').I16(1).Text("hello").bytes();
  ASSERT_TRUE(ParsePgOutput(ins, false).ok());
  for (size_t n = 0; n < ins.size(); ++n) {
    EXPECT_TRUE(absl::IsDataLoss(ParsePgOutput(ins.substr(0, n), false).status())) << n;
  }
  EXPECT_TRUE(absl::IsDataLoss(ParsePgOutput(ins + "x", false).status()));
  EXPECT_TRUE(absl::IsDataLoss(ParsePgOutput("Z", false).status()));
  // A binary value ('b') is never requested.
  EXPECT_TRUE(absl::IsDataLoss(ParsePgOutput(Msg('I').I32(1).I8('N').I16(1).I8('b').I32(0).bytes(), false).status()));
}

}  // namespace
}  // namespace ferry::ingest::pg
