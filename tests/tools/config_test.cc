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

namespace ferry::tools {
namespace {

TEST(ConfigTest, KafkaAndMirror) {
  auto primary = ParseConfig(R"(
region = "eu-west"
[archive]
path = "/a"
[kafka]
brokers = "mock:3"
[kafka.properties]
"security.protocol" = "ssl"
)", "ferry.toml");
  ASSERT_TRUE(primary.ok()) << primary.status();
  EXPECT_EQ(primary->kafka_topic_prefix, "ferry.eu-west");  // the default names the region
  EXPECT_EQ(primary->kafka_properties.at("security.protocol"), "ssl");

  auto mirror = ParseConfig(R"(
region = "us-east"
[archive]
path = "/m"
[kafka]
brokers = "k1:9092"
topic_prefix = "ferry.eu-west"
[mirror]
sources = ["main", "cache"]
apply_redis = "127.0.0.1:6380"
)", "mirror.toml");
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  EXPECT_EQ(mirror->mirror_sources, (std::vector<std::string>{"main", "cache"}));
  EXPECT_EQ(mirror->mirror_group_id, "ferry-mirror-us-east");
  EXPECT_EQ(mirror->mirror_apply_redis, "127.0.0.1:6380");

  ExpectError("[archive]\npath=\"/a\"\n[kafka]\nbrokers=\"mock:x\"\n", "kafka.brokers");
  ExpectError("[archive]\npath=\"/a\"\n[kafka]\nbrokers=\"k:1\"\n[kafka.properties]\n\"sasl.password\"=\"x\"\n",
              "FERRY_KAFKA_");
  // A mirror reads the primary's topics: their prefix must be given, not defaulted.
  ExpectError("region=\"us\"\n[archive]\npath=\"/a\"\n[kafka]\nbrokers=\"k:1\"\n[mirror]\nsources=[\"main\"]\n",
              "topic_prefix");
  ExpectError("[archive]\npath=\"/a\"\n[kafka]\nbrokers=\"k:1\"\ntopic_prefix=\"p\"\n[mirror]\nsources=[\"a b\"]\n",
              "mirror.sources[0]");
  ExpectError("[archive]\npath=\"/a\"\n[kafka]\nbrokers=\"k:1\"\ntopic_prefix=\"p\"\n[mirror]\napply_redis=\"nohost\"\n",
              "mirror.apply_redis");
}

TEST(ConfigTest, LogicalSlotAndApply) {
  auto c = ParseConfig(R"(
[archive]
path = "/a"
[kafka]
brokers = "mock:1"
topic_prefix = "p"
tombstones = false
[mirror]
sources = ["main"]
apply_postgres = "host=standby dbname=app"
[[source]]
name = "main"
kind = "postgres"
conninfo = "host=db"
logical_slot = "ferry_main_cdc"
publication_tables = ["public.orders", "items"]
)", "ferry.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->kafka_tombstones);
  EXPECT_EQ(c->mirror_apply_postgres, "host=standby dbname=app");
  EXPECT_EQ(c->sources[0].publication, "ferry_main");  // the default names the source
  EXPECT_EQ(c->sources[0].publication_tables, (std::vector<std::string>{"public.orders", "items"}));

  const std::string pg = "[archive]\npath=\"/a\"\n[[source]]\nname=\"main\"\nkind=\"postgres\"\nconninfo=\"h\"\n";
  ExpectError(pg + "logical_slot=\"Bad-Slot\"\n", "source[0].logical_slot");
  ExpectError(pg + "logical_slot=\"ferry_main\"\n", "must differ from physical_slot");
  ExpectError(pg + "publication=\"pub\"\n", "set logical_slot too");
}

}  // namespace
}  // namespace ferry::tools
