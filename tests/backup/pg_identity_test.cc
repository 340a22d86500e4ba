// The archive's record of a PostgreSQL system: the same system passes, another one is
// refused naming both, and a major upgrade is named as such with what to do.
#include "backup/pg_identity.h"

#include <gtest/gtest.h>

namespace ferry::backup {
namespace {

client::pg::SystemInfo System(uint64_t id, int version) {
  client::pg::SystemInfo sys;
  sys.system_id = id;
  sys.server_version = version;
  sys.segment_bytes = 16 << 20;
  return sys;
}

TEST(PgIdentityTest, SameSystemPassesOtherSystemAndMajorUpgradeAreNamed) {
  const storage::SourceIdentity identity = {{"kind", "postgres"}, {"system_id", "7001"}, {"pg_major", "16"}};
  EXPECT_TRUE(CheckPostgresIdentity(identity, "/a", "main", System(7001, 160004)).ok());

  const absl::Status other = CheckPostgresIdentity(identity, "/a", "main", System(7002, 160004));
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(other.message().find("server system id 7002 differs from the archive's 7001 (/a)"), std::string::npos)
      << other;

  const absl::Status upgrade = CheckPostgresIdentity(identity, "/a", "main", System(7003, 170002));
  EXPECT_EQ(upgrade.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(upgrade.message().find("the server is now PostgreSQL 17 (system id 7003), but the archive holds "
                                   "PostgreSQL 16's history (system id 7001): a major upgrade"),
            std::string::npos)
      << upgrade;
  EXPECT_NE(upgrade.message().find("Give the source a new name"), std::string::npos) << upgrade;

  // An archive from before the major was recorded: still refused, the upgrade mentioned.
  const storage::SourceIdentity old = {{"kind", "postgres"}, {"system_id", "7001"}};
  const absl::Status unknown = CheckPostgresIdentity(old, "/a", "main", System(7003, 170002));
  EXPECT_NE(unknown.message().find("after a major upgrade"), std::string::npos) << unknown;
}

}  // namespace
}  // namespace ferry::backup
