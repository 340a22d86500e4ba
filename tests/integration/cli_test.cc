// The command line a first user meets: version and help, the archive from --config for every
// reader, config check either way, and one clear line when the archive is not given.
#include <stdlib.h>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "tests/fixtures/ferry_process.h"

namespace ferry::testing {
namespace {

local::CommandResult Ferry(const std::vector<std::string>& args) {
  auto r = RunFerry(args);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.value_or(local::CommandResult{});
}

TEST(CliTest, VersionHelpConfigCheckAndArchiveFromConfig) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"version"}, {"--version"}}) {
    auto v = Ferry(args);
    EXPECT_EQ(v.exit_code, 0) << v.err;
    EXPECT_TRUE(absl::StartsWith(v.out, "ferry ")) << v.out;
    EXPECT_TRUE(absl::StrContains(v.out, "(commit ")) << v.out;
    EXPECT_TRUE(absl::StrContains(v.out, "PostgreSQL")) << v.out;
  }
  auto all = Ferry({"help"});
  EXPECT_EQ(all.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(all.out, "wal-fetch")) << all.out;
  auto one = Ferry({"help", "restore", "postgres"});
  EXPECT_EQ(one.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(one.out, "--lsn")) << one.out;
  auto none = Ferry({"help", "nosuch"});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(none.err, "no command \"nosuch\"")) << none.err;

  // The repository's example configs pass config check, given as FILE or as --config.
  ASSERT_EQ(setenv("FERRY_REDIS_PASSWORD", "example", 1), 0);
  for (const char* name : {"ferry.example.toml", "ferry.mirror.example.toml"}) {
    const std::string path = std::string(FERRY_TESTDATA_DIR) + "/../../tools/" + name;
    auto positional = Ferry({"config", "check", path});
    EXPECT_EQ(positional.exit_code, 0) << positional.err;
    auto flag = Ferry({"config", "check", "--config", path});
    EXPECT_EQ(flag.exit_code, 0) << flag.err;
    EXPECT_EQ(flag.out, positional.out);
  }
  unsetenv("FERRY_REDIS_PASSWORD");

  // A reader with neither --archive nor --config: one line saying what to give.
  auto missing = Ferry({"ls"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(missing.err, "--archive DIR or --config FILE")) << missing.err;
  // --config names the archive: ls reads the example's path (absent here: said so, in JSON).
  ASSERT_EQ(setenv("FERRY_REDIS_PASSWORD", "example", 1), 0);
  auto from_config =
      Ferry({"ls", "--json", "--config", std::string(FERRY_TESTDATA_DIR) + "/../../tools/ferry.example.toml"});
  unsetenv("FERRY_REDIS_PASSWORD");
  EXPECT_EQ(from_config.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(from_config.out, "\"archive\":\"/var/lib/ferry/archive\",\"error\":")) << from_config.out;
}

}  // namespace
}  // namespace ferry::testing
