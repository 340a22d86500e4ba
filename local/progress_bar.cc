#include "local/progress_bar.h"

#include <unistd.h>

#include <cstdio>

#include "pipeline/position.h"

namespace ferry::local {

ProgressBar::ProgressBar(std::string what) : what_(std::move(what)), enabled_(isatty(2) == 1) {}

ProgressBar::~ProgressBar() {
  if (drawn_) std::fputc('\n', stderr);
}

void ProgressBar::Update(uint64_t done, uint64_t total) {
  if (!enabled_) return;
  const int64_t now = pipeline::NowUnixMicros();
  if (drawn_ && now - last_draw_us_ < 100000 && done < total) return;
  last_draw_us_ = now;
  drawn_ = true;
  const double mib = static_cast<double>(done) / (1 << 20);
  if (total == 0) {
    std::fprintf(stderr, "\r%s %.1f MiB", what_.c_str(), mib);
  } else {
    const double frac = done >= total ? 1.0 : static_cast<double>(done) / total;
    constexpr int kWidth = 30;
    const int fill = static_cast<int>(frac * kWidth);
    std::fprintf(stderr, "\r%s [%.*s%*s] %3d%% %.1f/%.1f MiB", what_.c_str(), fill,
                 "##############################", kWidth - fill, "", static_cast<int>(frac * 100),
                 mib, static_cast<double>(total) / (1 << 20));
  }
  std::fflush(stderr);
}

}  // namespace ferry::local
