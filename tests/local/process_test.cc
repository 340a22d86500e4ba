// RunCommand: output capture without pipe deadlock, exit codes, env and cwd, clear errors,
// and the timeout that kills the whole process group.
#include "local/process.h"

#include <unistd.h>

#include <chrono>

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace ferry::local {
namespace {

TEST(RunCommandTest, CapturesStdoutStderrAndExitCode) {
  auto r = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
}

TEST(RunCommandTest, LargeOutputOnBothPipesDoesNotDeadlock) {
  // 1 MiB to each pipe, stderr first: a reader that drained only stdout would hang here.
  auto r = RunCommand({"sh", "-c", "head -c 1048576 /dev/zero >&2; head -c 1048576 /dev/zero"}, {.timeout_seconds = 60});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->out.size(), 1048576u);
  EXPECT_EQ(r->err.size(), 1048576u);
}

TEST(RunCommandTest, SignalDeathIs128PlusSignal) {
  auto r = RunCommand({"sh", "-c", "kill -9 $$"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 128 + 9);
}

TEST(RunCommandTest, EnvAndCwdReachTheChild) {
  RunOptions o;
  o.env = {"FERRY_TEST_VALUE=it's here", "HOME=/nowhere"};
  o.cwd = "/usr";
  auto r = RunCommand({"sh", "-c", "echo \"$FERRY_TEST_VALUE|$HOME|$(pwd)\""}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->out, "it's here|/nowhere|/usr\n");
}

TEST(RunCommandTest, StdinIsEmpty) {
  auto r = RunCommand({"cat"}, {.timeout_seconds = 10});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->out, "");
}

TEST(RunCommandTest, MissingProgramAndDirectoryAreErrorsNamingThem) {
  auto missing = RunCommand({"ferry-no-such-program"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "ferry-no-such-program")) << missing.status();

  auto bad_cwd = RunCommand({"true"}, {.cwd = "/ferry/no/such/dir"});
  ASSERT_FALSE(bad_cwd.ok());
  EXPECT_EQ(bad_cwd.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(bad_cwd.status().message(), "/ferry/no/such/dir")) << bad_cwd.status();

  EXPECT_EQ(RunCommand({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RunCommandTest, TimeoutKillsTheProcessGroup) {
  // The grandchild (a background sleep) holds the pipes too; it must die with the group.
  const auto t0 = std::chrono::steady_clock::now();
  auto r = RunCommand({"sh", "-c", "sleep 30 & echo started; wait"}, {.timeout_seconds = 1});
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "sh -c")) << r.status();
  EXPECT_LT(elapsed, std::chrono::seconds(10));
}

TEST(RunCommandTest, DoesNotWaitForDaemonsHoldingThePipes) {
  // Like pg_ctl start: the command exits while something it started keeps running.
  const auto t0 = std::chrono::steady_clock::now();
  auto r = RunCommand({"sh", "-c", "setsid sleep 5 & echo done"}, {.timeout_seconds = 20});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->out, "done\n");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(4));
}

TEST(RunCommandTest, AsUserIsIgnoredUnlessRoot) {
  auto r = RunCommand({"id", "-un"}, {.as_user = "nobody"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->err;
  if (RunningAsRoot()) {
    EXPECT_EQ(r->out, "nobody\n");
  } else {
    EXPECT_NE(r->out, "nobody\n");
  }
}

TEST(ShellQuoteTest, QuotesOnlyWhenNeeded) {
  EXPECT_EQ(ShellQuote("/usr/lib/postgresql/15/bin"), "/usr/lib/postgresql/15/bin");
  EXPECT_EQ(ShellQuote("a b"), "'a b'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote(""), "''");
  EXPECT_EQ(ShellQuote("$HOME"), "'$HOME'");
  auto r = RunCommand({"sh", "-c", "printf %s " + ShellQuote("it's $x `y` \"z\"")});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->out, "it's $x `y` \"z\"");
}

TEST(FindFreeLoopbackPortTest, ReturnsAUsablePort) {
  auto port = FindFreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
}

}  // namespace
}  // namespace ferry::local
