// The PostgreSQL majors ferry streams from: 14 to 18; others get one line naming both.
#include "client/pg/server_version.h"

#include <gtest/gtest.h>

namespace ferry::client::pg {
namespace {

TEST(ServerVersionTest, FourteenToEighteenAreSupported) {
  EXPECT_EQ(*SupportedMajor(140023), 14);
  EXPECT_EQ(*SupportedMajor(150004), 15);
  EXPECT_EQ(*SupportedMajor(180004), 18);
}

TEST(ServerVersionTest, OthersAreRefusedNamingTheVersionAndTheRange) {
  const auto old = SupportedMajor(130016);
  EXPECT_TRUE(absl::IsFailedPrecondition(old.status()));
  EXPECT_EQ(old.status().message(),
            "the server is PostgreSQL 13.16; ferry supports PostgreSQL 14 to 18: point the source at a supported server");
  EXPECT_TRUE(absl::IsFailedPrecondition(SupportedMajor(190000).status()));
}

}  // namespace
}  // namespace ferry::client::pg
