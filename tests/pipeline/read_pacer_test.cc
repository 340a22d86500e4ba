// ReadPacer: reads a commit_delay apart, but never held by a stop or a fast stream. The bounds
// are one-sided and loose (the pause is at least this long, the early end well within the
// pause): a slow machine cannot fail them.
#include "pipeline/read_pacer.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace ferry::pipeline {
namespace {

double SecondsOf(ReadPacer& pacer, absl::Duration pace, size_t burst) {
  const auto t0 = std::chrono::steady_clock::now();
  pacer.Pace(pace, burst, 60'000);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct StopEvent {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ~StopEvent() { close(fd); }
  void Fire() {
    const uint64_t one = 1;
    ASSERT_EQ(write(fd, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
  }
};

TEST(ReadPacerTest, SpacesReadsByThePace) {
  StopEvent stop;
  ReadPacer pacer(stop.fd);
  EXPECT_LT(SecondsOf(pacer, absl::Seconds(30), 0), 10) << "the first read waits for nothing";
  EXPECT_GE(SecondsOf(pacer, absl::Milliseconds(300), 0), 0.25);
  EXPECT_GE(SecondsOf(pacer, absl::Milliseconds(300), 0), 0.25);
  EXPECT_LT(SecondsOf(pacer, absl::ZeroDuration(), 0), 10) << "no pace: no wait";
}

TEST(ReadPacerTest, AFastStreamIsReadOnAtOnce) {
  StopEvent stop;
  ReadPacer pacer(stop.fd);
  pacer.Pace(absl::Seconds(30), 0, 60'000);
  EXPECT_LT(SecondsOf(pacer, absl::Seconds(30), ReadPacer::kBusyBytes), 10);
}

TEST(ReadPacerTest, TheCallersDeadlineEndsThePause) {
  StopEvent stop;
  ReadPacer pacer(stop.fd);
  pacer.Pace(absl::Seconds(30), 0, 60'000);
  const auto t0 = std::chrono::steady_clock::now();
  pacer.Pace(absl::Seconds(30), 0, /*max_wait_ms=*/200);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(s, 0.15);
  EXPECT_LT(s, 10);
}

TEST(ReadPacerTest, AStopEndsThePauseAndStaysForTheCaller) {
  StopEvent stop;
  ReadPacer pacer(stop.fd);
  pacer.Pace(absl::Seconds(30), 0, 60'000);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop.Fire();
  });
  EXPECT_LT(SecondsOf(pacer, absl::Seconds(30), 0), 10);
  stopper.join();
  uint64_t v = 0;
  EXPECT_EQ(read(stop.fd, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v))) << "the stop event was consumed";
}

}  // namespace
}  // namespace ferry::pipeline
