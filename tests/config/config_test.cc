// Config loading: defaults, and errors that name the key.
#include "config/config.h"

#include <stdlib.h>

#include <gtest/gtest.h>

namespace ferry::config {
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
  EXPECT_TRUE(c->sources[0].commit_delay_auto);
}

void ExpectError(const std::string& toml, const std::string& needle) {
  auto c = ParseConfig(toml, "f.toml");
  ASSERT_FALSE(c.ok()) << toml;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(needle), absl::string_view::npos) << c.status();
}

TEST(ConfigTest, CommitDelayIsAutoOrADuration) {
  const std::string base = "[archive]\npath=\"/a\"\n[[source]]\nname=\"m\"\nkind=\"redis\"\naddress=\"127.0.0.1:6379\"\n";
  auto fixed = ParseConfig(base + "commit_delay = \"2ms\"\n", "f.toml");
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_FALSE(fixed->sources[0].commit_delay_auto);
  EXPECT_EQ(fixed->sources[0].commit_delay, absl::Milliseconds(2));
  auto zero = ParseConfig(base + "commit_delay = \"0s\"\n", "f.toml");
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_FALSE(zero->sources[0].commit_delay_auto);
  EXPECT_EQ(zero->sources[0].commit_delay, absl::ZeroDuration());
  auto automatic = ParseConfig(base + "commit_delay = \"auto\"\n", "f.toml");
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_TRUE(automatic->sources[0].commit_delay_auto);
  ExpectError(base + "commit_delay = \"2s\"\n", "source[0].commit_delay: must be \"auto\" or at most 1s");
  ExpectError(base + "commit_delay = \"soon\"\n", "source[0].commit_delay");
}

TEST(ConfigTest, ErrorsNameTheKey) {
  ExpectError("[archive]\npath=\"/a\"\nwritr=\"posix\"\n", "unknown key \"archive.writr\"");
  ExpectError("[archive]\npath=\"/a\"\nwriter=\"fast\"\n", "archive.writer");
  ExpectError("[archive]\npath=\"/a\"\n[[source]]\nname=\"m\"\nkind=\"postgres\"\n", "source[0].conninfo");
  ExpectError("[archive]\npath=\"/a\"\n[[source]]\nname=\"m\"\nkind=\"postgres\"\nconninfo=\"host=x\"\nack=\"both\"\n",
              "source[0].ack");
  ExpectError("[archive]\npath=\"/a\"\n[retention]\nwal=\"3 days\"\n", "retention.wal");
  ExpectError("bogus = 1\n[archive]\npath=\"/a\"\n", "unknown key \"bogus\"");
  ExpectError("[archive\n", "f.toml:1");
  // A day count too large for int64 hours saturates instead of overflowing (found by fuzz_config).
  auto days = ParseDuration("4099276460824344806d");
  ASSERT_TRUE(days.ok()) << days.status();
  EXPECT_EQ(*days, absl::InfiniteDuration());
  EXPECT_EQ(*ParseDuration("2d"), absl::Hours(48));
  // Non-ASCII between tokens would reach undefined behaviour in toml++ 3.3 (found by
  // fuzz_config); inside strings and comments it is fine.
  ExpectError("# caf\xc3\xa9\n[archive]\npath=\"/a\"\nwriter = posix \xc3\xa9\n",
              "f.toml:4: a non-ASCII character outside a quoted string");
  ExpectError("region = \"\"\"\\\xef\xbb\xaf\"\"\"\n", "f.toml:1: a non-ASCII character after a backslash");
  EXPECT_TRUE(ParseConfig("# caf\xc3\xa9\n[archive]\npath = \"/caf\xc3\xa9\" # \xc3\xa9\nwriter = '''posix'''\n",
                          "f.toml").ok());
  EXPECT_TRUE(ParseConfig("\xEF\xBB\xBF[archive]\npath = \"/a\"\n", "f.toml").ok());  // a byte order mark
}

}  // namespace
}  // namespace ferry::config

namespace ferry::config {
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
  // TLS and SASL settings pass through to librdkafka; their secrets come from the environment.
  ASSERT_EQ(setenv("FERRY_KAFKA_SASL_PASSWORD", "s3cret", 1), 0);
  auto sasl = ParseConfig("[archive]\npath=\"/a\"\n[kafka]\nbrokers=\"k:1\"\n[kafka.properties]\n"
                          "\"security.protocol\"=\"sasl_ssl\"\n\"sasl.mechanisms\"=\"SCRAM-SHA-512\"\n"
                          "\"sasl.username\"=\"ferry\"\n\"ssl.ca.location\"=\"/etc/ferry/kafka-ca.pem\"\n",
                          "f.toml");
  unsetenv("FERRY_KAFKA_SASL_PASSWORD");
  ASSERT_TRUE(sasl.ok()) << sasl.status();
  EXPECT_EQ(sasl->kafka_properties.at("security.protocol"), "sasl_ssl");
  EXPECT_EQ(sasl->kafka_properties.at("ssl.ca.location"), "/etc/ferry/kafka-ca.pem");
  EXPECT_EQ(sasl->kafka_properties.at("sasl.password"), "s3cret");
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
logical_slot_failover = true
publication_tables = ["public.orders", "items"]
pg_bin = "/usr/lib/postgresql/17/bin"
)", "ferry.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->kafka_tombstones);
  EXPECT_EQ(c->mirror_apply_postgres, "host=standby dbname=app");
  EXPECT_EQ(c->sources[0].publication, "ferry_main");  // the default names the source
  EXPECT_EQ(c->sources[0].publication_tables, (std::vector<std::string>{"public.orders", "items"}));
  EXPECT_TRUE(c->sources[0].logical_slot_failover);
  EXPECT_EQ(c->sources[0].pg_bin, "/usr/lib/postgresql/17/bin");

  const std::string pg = "[archive]\npath=\"/a\"\n[[source]]\nname=\"main\"\nkind=\"postgres\"\nconninfo=\"host=h\"\n";
  ExpectError(pg + "logical_slot=\"Bad-Slot\"\n", "source[0].logical_slot");
  ExpectError(pg + "logical_slot=\"ferry_main\"\n", "must differ from physical_slot");
  ExpectError(pg + "publication=\"pub\"\n", "set logical_slot too");
  ExpectError(pg + "logical_slot_failover=true\n", "source[0].logical_slot_failover");
}

}  // namespace
}  // namespace ferry::config

#include <sys/stat.h>

#include <fstream>

#include "tests/fixtures/scratch.h"

namespace ferry::config {
namespace {

// Secrets come from the environment or from files only their owner can read.
TEST(ConfigTest, SecretsStayOutOfTheConfigAndPrivate) {
  const std::string head = "[archive]\npath=\"/a\"\n[[source]]\nname=\"m\"\nkind=\"postgres\"\n";
  ExpectError(head + "conninfo=\"host=db user=r password=hunter2\"\n", "source[0].conninfo: holds a password");
  ExpectError(head + "conninfo=\"postgresql://r:hunter2@db/postgres\"\n", "PGPASSWORD");
  ExpectError("[archive]\npath=\"/a\"\n[kafka]\nbrokers=\"mock:1\"\ntopic_prefix=\"ferry.eu\"\n[mirror]\n"
              "sources=[\"m\"]\napply_postgres=\"host=standby password=x\"\n",
              "mirror.apply_postgres: holds a password");
  EXPECT_TRUE(ParseConfig(head + "conninfo=\"host=db user=r passfile=/etc/ferry/pgpass\"\n", "f.toml").ok());
  EXPECT_TRUE(ParseConfig(head + "conninfo=\"mydb\"\n", "f.toml").ok());  // a bare database name

  const std::string dir = testing::TestDir("secrets");
  const std::string pass = dir + "/redis.pass";
  std::ofstream(pass) << "s3cret\n";
  ASSERT_EQ(chmod(pass.c_str(), 0644), 0);
  const std::string redis = "[archive]\npath=\"/a\"\n[[source]]\nname=\"r\"\nkind=\"redis\"\naddress=\"127.0.0.1:6379\"\n"
                            "password_file=\"" + pass + "\"\n";
  auto refused = ParseConfig(redis, "f.toml");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("source[0].password_file: " + pass +
                                            " can be read or written by group or others (mode 0644)"),
            absl::string_view::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("chmod 600"), absl::string_view::npos) << refused.status();
  ASSERT_EQ(chmod(pass.c_str(), 0600), 0);
  auto ok = ParseConfig(redis, "f.toml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->sources[0].redis.password, "s3cret");
}

// Off loopback, the HTTP endpoint needs a bearer token.
TEST(ConfigTest, HttpOffLoopbackNeedsAToken) {
  const std::string head = "[archive]\npath=\"/a\"\n[http]\n";
  EXPECT_TRUE(ParseConfig(head + "listen=\"127.0.0.1:9187\"\n", "f.toml").ok());
  EXPECT_TRUE(ParseConfig(head + "listen=\"localhost:9187\"\n", "f.toml").ok());
  ExpectError(head + "listen=\"0.0.0.0:9187\"\n", "http.listen: \"0.0.0.0:9187\" is not a loopback address: set token_file");
  ExpectError(head + "listen=\":9187\"\n", "set token_file");
  ExpectError(head + "listen=\"127.example.com:9187\"\n", "set token_file");
  EXPECT_TRUE(ParseConfig(head + "listen=\"127.0.0.2:9187\"\n", "f.toml").ok());

  const std::string token = testing::TestDir("token") + "/token";
  std::ofstream(token) << "t0ken\n";
  ASSERT_EQ(chmod(token.c_str(), 0600), 0);
  auto c = ParseConfig(head + "listen=\"0.0.0.0:9187\"\ntoken_file=\"" + token + "\"\n", "f.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->http_token, "t0ken");
}

// The example configurations in the repository are what `ferry config check` accepts, with
// the secrets they name from the environment present (as a deployment would have them).
TEST(ConfigTest, ExampleConfigsInTheRepositoryLoad) {
  ASSERT_EQ(setenv("FERRY_REDIS_PASSWORD", "example", 1), 0);
  for (const char* name : {"ferry.example.toml", "ferry.mirror.example.toml"}) {
    const std::string path = std::string(FERRY_TESTDATA_DIR) + "/../../tools/" + name;
    auto c = LoadConfig(path);
    EXPECT_TRUE(c.ok()) << path << ": " << c.status();
  }
  unsetenv("FERRY_REDIS_PASSWORD");
}

}  // namespace
}  // namespace ferry::config
