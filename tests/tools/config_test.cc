// Config loading: defaults, and errors that name the key.
#include "tools/service/config.h"

#include <gtest/gtest.h>

namespace ferry::tools {
namespace {

TEST(ConfigTest, DesignExampleParsesWithDefaults) {
  auto c = ParseConfig(R"(
region = "eu-west"
[archive]
path = "/var/lib/ferry/archive"
writer = "posix"
[retention]
wal = "72h"
[[source]]
name = "main"
kind = "postgres"
conninfo = "host=db port=5432 user=replicator"
ack = "local"
)", "ferry.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->writer, storage::WriterKind::kPosix);
  ASSERT_EQ(c->sources.size(), 1u);
  EXPECT_EQ(c->sources[0].physical_slot, "ferry_main");
  EXPECT_EQ(c->sources[0].application_name, "ferry_main");
  EXPECT_EQ(c->retention_wal, absl::Hours(72));
}

void ExpectError(const std::string& toml, const std::string& needle) {
  auto c = ParseConfig(toml, "f.toml");
  ASSERT_FALSE(c.ok()) << toml;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(needle), absl::string_view::npos) << c.status();
}

TEST(ConfigTest, ErrorsNameTheKey) {
  ExpectError("[archive]\npath=\"/a\"\nwritr=\"posix\"\n", "unknown key \"archive.writr\"");
  ExpectError("[archive]\npath=\"/a\"\nwriter=\"fast\"\n", "archive.writer");
  ExpectError("[archive]\npath=\"/a\"\n[[source]]\nname=\"m\"\nkind=\"postgres\"\n", "source[0].conninfo");
  ExpectError("[archive]\npath=\"/a\"\n[[source]]\nname=\"m\"\nkind=\"postgres\"\nconninfo=\"x\"\nack=\"both\"\n",
              "source[0].ack");
  ExpectError("[archive]\npath=\"/a\"\n[retention]\nwal=\"3 days\"\n", "retention.wal");
  ExpectError("bogus = 1\n[archive]\npath=\"/a\"\n", "unknown key \"bogus\"");
  ExpectError("[archive\n", "f.toml:1");
}

}  // namespace
}  // namespace ferry::tools
