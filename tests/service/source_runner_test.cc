// The supervisor loop every stream of the service shares (SourceRunner::Supervise): connection
// trouble is retried with backoff and counted, any other error ends the stream and stops its
// batcher, a stopped runner starts no session.
#include "service/source_runner.h"

#include <filesystem>

#include <gtest/gtest.h>

#include "storage/stream_log.h"
#include "tests/fixtures/scratch.h"

namespace ferry::service {
namespace {

using ::ferry::testing::TestDir;

struct Fixture {
  Fixture() : dir(TestDir("ferry-runner")) {
    storage::StreamLogOptions o;
    o.read_only = false;
    auto opened = storage::StreamLog::Open(dir, pipeline::StreamKind::kRedisCommands, o);
    EXPECT_TRUE(opened.ok()) << opened.status();
    log = std::move(*opened);
    batcher = std::make_unique<pipeline::Batcher>(log.get(), pipeline::AckPolicy::kLocal, pipeline::BatcherOptions{});
    batcher->Resume({1, 0});
  }
  ~Fixture() {
    batcher.reset();
    log.reset();
    std::filesystem::remove_all(dir);
  }
  config::SourceConfig Source() {
    config::SourceConfig sc;
    sc.name = "cache";
    sc.kind = "redis";
    return sc;
  }
  std::string dir;
  std::unique_ptr<storage::StreamLog> log;
  std::unique_ptr<pipeline::Batcher> batcher;
};

pipeline::Record Command(uint64_t end_pos) {
  pipeline::Record r;
  r.payload = "x";
  r.end_pos = end_pos;
  return r;
}

TEST(SourceRunnerTest, ConnectionTroubleIsRetriedAndCountedUntilASessionEndsCleanly) {
  Fixture f;
  SourceRunner runner(f.Source());
  int sessions = 0;
  const absl::Status st = runner.Supervise(*f.batcher, [&]() -> absl::Status {
    ++sessions;
    if (sessions <= 2) return absl::UnavailableError("connection refused");
    runner.Streaming();
    EXPECT_TRUE(runner.up.load());
    runner.Deactivate();
    return absl::OkStatus();  // stopped on request
  });
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(sessions, 3);
  EXPECT_EQ(runner.reconnects.load(), 2u);
  absl::MutexLock lock(&runner.mu);
  EXPECT_EQ(runner.errors["UNAVAILABLE"], 2u);
  EXPECT_FALSE(runner.up.load());
}

TEST(SourceRunnerTest, AnyOtherErrorEndsTheStreamAndStopsItsBatcher) {
  Fixture f;
  SourceRunner runner(f.Source());
  int sessions = 0;
  const absl::Status st = runner.Supervise(*f.batcher, [&] {
    ++sessions;
    return absl::FailedPreconditionError("server system id differs from the archive's");
  });
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_EQ(sessions, 1);
  EXPECT_EQ(runner.reconnects.load(), 0u);
  {
    absl::MutexLock lock(&runner.mu);
    EXPECT_EQ(runner.errors["FAILED_PRECONDITION"], 1u);
  }
  // Stopped: nothing more is taken.
  EXPECT_FALSE(f.batcher->Append({1, 0}, Command(1)).ok());
}

TEST(SourceRunnerTest, AStoppedRunnerStartsNoSessionAndActivatesNothing) {
  Fixture f;
  SourceRunner runner(f.Source());
  {
    absl::MutexLock lock(&runner.mu);
    runner.stop = true;
  }
  EXPECT_FALSE(runner.Activate([] {}, [] { return std::string("offset=1"); }));
  int sessions = 0;
  EXPECT_TRUE(runner.Supervise(*f.batcher, [&] {
                      ++sessions;
                      return absl::OkStatus();
                    })
                  .ok());
  EXPECT_EQ(sessions, 0);
  absl::MutexLock lock(&runner.mu);
  EXPECT_FALSE(runner.stop_active);
}

}  // namespace
}  // namespace ferry::service
