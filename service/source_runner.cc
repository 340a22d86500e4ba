#include "service/source_runner.h"

#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"

namespace ferry::service {

std::string StreamApplicationName(const config::SourceConfig& sc) {
  return sc.kind == kPgChangesKind ? absl::StrCat(sc.application_name, "_changes") : sc.application_name;
}

absl::Status SourceRunner::Supervise(pipeline::Batcher& batcher, absl::FunctionRef<absl::Status()> session) {
  while (true) {
    {
      absl::MutexLock lock(&mu);
      if (stop) return absl::OkStatus();
    }
    const absl::Status st = session();
    FERRY_ASSIGN_OR_RETURN(bool retry, RetryAfter(st, batcher));
    if (!retry) return absl::OkStatus();
  }
}

bool SourceRunner::Activate(std::function<void()> stop_source, std::function<std::string()> line) {
  absl::MutexLock lock(&mu);
  if (stop) return false;
  stop_active = std::move(stop_source);
  progress_line = std::move(line);
  return true;
}

void SourceRunner::Streaming(absl::string_view what) {
  if (was_down_) spdlog::info("source={} event=reconnected{}", config->name, std::string(what));
  was_down_ = false;
  backoff_ = absl::Milliseconds(500);
  Up();
}

void SourceRunner::Deactivate() {
  Down();
  absl::MutexLock lock(&mu);
  stop_active = nullptr;
  progress_line = nullptr;
}

absl::StatusOr<bool> SourceRunner::RetryAfter(const absl::Status& st, pipeline::Batcher& batcher) {
  if (st.ok()) return false;  // stopped on request, drained and acknowledged
  {
    absl::MutexLock lock(&mu);
    ++errors[absl::StatusCodeToString(st.code())];
  }
  if (!absl::IsUnavailable(st)) {
    (void)batcher.Stop();
    return st;
  }
  reconnects.fetch_add(1);
  if (!was_down_) spdlog::warn("source={} event=disconnected error=\"{}\"", config->name, std::string(st.message()));
  was_down_ = true;
  absl::MutexLock lock(&mu);
  // ±20 % jitter, so that many ferries losing one server do not come back in lockstep.
  thread_local std::mt19937 rng(std::random_device{}());
  const double jitter = std::uniform_real_distribution<double>(0.8, 1.2)(rng);
  mu.AwaitWithTimeout(absl::Condition(&stop), backoff_ * jitter);
  backoff_ = std::min(backoff_ * 2, absl::Seconds(30));
  return true;
}

}  // namespace ferry::service
