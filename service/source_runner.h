// One stream of one source inside the service: its configuration, its threads (streaming,
// backups, the commit_delay watch), what it publishes for /metrics and Stop, and the
// supervisor loop that reconnects it. A PostgreSQL source with a logical slot has two runners.
// Internal to service/.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "cross_region/shipper.h"
#include "pipeline/batcher.h"
#include "pipeline/position.h"

namespace ferry::service {

// The kind of the runner that streams a PostgreSQL source's change events (its logical slot)
// beside the one that streams its WAL: each stream has its own thread, connection and batcher.
inline constexpr char kPgChangesKind[] = "postgres-changes";

// The application_name a PostgreSQL stream connects under: what synchronous_standby_names
// names. The change events' connection has a name of its own next to the WAL's.
std::string StreamApplicationName(const config::SourceConfig& sc);

struct SourceRunner {
  explicit SourceRunner(config::SourceConfig sc) : own(std::move(sc)), config(&own) {}
  const config::SourceConfig own;  // a copy: a reload replaces the service's config, not this
  const config::SourceConfig* config;
  std::once_flag joined;
  bool retired = false;        // removed or replaced by a reload (guarded by the service's mu_)
  bool joined_by_run = false;  // Run has joined it (guarded by the service's mu_)
  std::atomic<bool> ended{false};  // its streaming thread has returned (stopped or failed)
  std::thread thread;
  std::thread backup_thread;
  std::thread delay_thread;  // commit_delay = "auto" on PostgreSQL: RunCommitDelayWatch
  std::atomic<bool> cancel_backup{false};
  absl::Status result;
  absl::Mutex mu;
  bool stop ABSL_GUARDED_BY(mu) = false;
  // Stops the source that is streaming right now (none between connections).
  std::function<void()> stop_active ABSL_GUARDED_BY(mu);
  // Its counters as key=value pairs for the periodic progress log line.
  std::function<std::string()> progress_line ABSL_GUARDED_BY(mu);
  // For /metrics and /healthz.
  pipeline::Batcher* batcher ABSL_GUARDED_BY(mu) = nullptr;  // while it lives
  // What its batchers use: the configured commit_delay, or what "auto" makes of it now.
  absl::Duration commit_delay ABSL_GUARDED_BY(mu) = config->commit_delay_auto ? absl::ZeroDuration() : config->commit_delay;
  cross_region::StreamShipper* shipper ABSL_GUARDED_BY(mu) = nullptr;  // with [kafka], while it lives
  std::unique_ptr<cross_region::SnapshotShipper> snapshot_shipper;  // with [kafka]
  std::atomic<bool> up{false};
  std::atomic<int64_t> down_since_us{pipeline::NowUnixMicros()};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> retention_deleted{0};
  std::map<std::string, uint64_t> errors ABSL_GUARDED_BY(mu);  // sessions that ended in error, by code

  // The supervisor loop of every stream: runs `session` (connect, synchronise, stream until
  // it ends) again and again until the runner is stopped. After connection trouble
  // (kUnavailable) it reconnects with capped, jittered exponential backoff, logged once per
  // outage; any other error stops `batcher` and is returned. A session returns OK when it
  // was stopped on request.
  absl::Status Supervise(pipeline::Batcher& batcher, absl::FunctionRef<absl::Status()> session);

  // Publishes how to stop the source now connected, and its progress line; false (nothing
  // published) when the runner was stopped meanwhile.
  bool Activate(std::function<void()> stop_source, std::function<std::string()> line) ABSL_LOCKS_EXCLUDED(mu);
  // The source streams: a reconnection is logged, the backoff starts over, the runner is up.
  // `what` qualifies the log line (" stream=pg-changes"). Streaming thread only.
  void Streaming(absl::string_view what = "");
  // Its session ended: down, and nothing of it published.
  void Deactivate() ABSL_LOCKS_EXCLUDED(mu);

 private:
  // After a session ended with `st`: false when it was stopped on request; true, after a
  // backoff, for connection trouble; any other error stops the batcher and is returned.
  absl::StatusOr<bool> RetryAfter(const absl::Status& st, pipeline::Batcher& batcher);
  // Streaming (connected and synchronised) or not; down_since_us moves only on the change, so
  // retries while the server stays away do not reset how long it has been down.
  void Up() { up = true; }
  void Down() {
    if (up.exchange(false)) down_since_us = pipeline::NowUnixMicros();
  }

  // The streaming thread's reconnection state.
  bool was_down_ = false;
  absl::Duration backoff_ = absl::Milliseconds(500);
};

}  // namespace ferry::service
