// NamesSynchronousStandby against synchronous_standby_names values in each of PostgreSQL 15's
// forms (SpineSyncTest.AutoCommitDelayFollowsSynchronousStandbyNames checks that the server
// agrees on a quoted upper-case name in a FIRST list).
#include <gtest/gtest.h>

#include "client/pg/replication_conn.h"

namespace ferry::client::pg {
namespace {

TEST(SyncStandbyNamesTest, EveryFormOfTheSetting) {
  struct Case {
    const char* setting;
    bool named;
  };
  const Case cases[] = {
      {"", false},
      {"   ", false},
      {"ferry_main", true},
      {"FERRY_Main", true},  // the server compares case-insensitively, quoted or not
      {"other", false},
      {"ferry_main_changes", false},  // a longer name is another standby
      {"other, ferry_main", true},
      {"*", true},
      {"other,*", true},
      {"FIRST 1 (other, ferry_main)", true},  // a candidate: it takes over when `other` goes
      {"first 2(ferry_main,other)", true},
      {"ANY 1 (a, b)", false},
      {"any 1 (a, \"ferry_main\")", true},
      {"2 (a, ferry_main)", true},
      {"2 (a, b)", false},
      {"\"ferry,main\"", false},
      {"\"we\"\"ird\", ferry_main", true},
      {"\"*\"", true},
      {"1", false},  // a number alone is a standby's name
      {"FIRST 1 (a", true},  // unparseable: counts as named
      {"\"open", true},
      {"a b", true},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(NamesSynchronousStandby(c.setting, "ferry_main"), c.named) << "'" << c.setting << "'";
  }
  // The server keeps a name's bytes outside printable ASCII as '?', and compares that.
  EXPECT_TRUE(NamesSynchronousStandby("\"ferry_caf??\"", "ferry_caf\xc3\xa9"));
  EXPECT_FALSE(NamesSynchronousStandby("\"ferry_caf\xc3\xa9\"", "ferry_caf\xc3\xa9"));
}

}  // namespace
}  // namespace ferry::client::pg
