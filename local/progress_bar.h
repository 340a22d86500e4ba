// A one-line progress bar on stderr for long work (base backups, restores), shown only when
// stderr is a terminal (docs/design.md: long work shows progress on a terminal and stays
// quiet in logs). Not thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace ferry::local {

class ProgressBar {
 public:
  explicit ProgressBar(std::string what);
  ~ProgressBar();  // ends the line if anything was drawn
  // Redraws at most ten times a second; total 0 shows bytes only.
  void Update(uint64_t done, uint64_t total);

 private:
  std::string what_;
  bool enabled_;
  bool drawn_ = false;
  int64_t last_draw_us_ = 0;
};

}  // namespace ferry::local
