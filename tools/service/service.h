// The long-running service (`ferry run`): one supervised streaming thread per source, each
// wired source -> Batcher -> archive StreamLog, with acknowledgements flowing back.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "cross_region/kafka.h"
#include "pipeline/batcher.h"
#include "storage/archive.h"
#include "tools/service/archive_verifier.h"
#include "tools/service/config.h"
#include "tools/service/http.h"

namespace ferry::tools {

// The disk-space guard of the archive's file system: Low() while its free fraction is under
// `min_free` (rechecked at most once a second; changes logged once). Thread-safe.
class DiskGuard {
 public:
  DiskGuard(std::string path, double min_free) : path_(std::move(path)), min_free_(min_free) {}
  bool Low();
  double FreeFraction();

 private:
  const std::string path_;
  const double min_free_;
  absl::Mutex mu_;
  absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool low_ ABSL_GUARDED_BY(mu_) = false;
  double free_ ABSL_GUARDED_BY(mu_) = 1;
};

// commit_delay = "auto" (the default) on a PostgreSQL stream: 0 while the primary's
// synchronous_standby_names names the stream's application_name (commits may wait on its
// flush reports: RPO 0 at the least latency), this otherwise, where nobody waits on those
// reports and fewer, larger group commits cost the primary and ferry far less CPU (RPO stays
// this small). Redis streams: 0 (a `WAIT` may be waiting on any ack).
inline constexpr absl::Duration AutoCommitDelay() { return absl::Milliseconds(10); }
// How often the service asks each PostgreSQL source's primary (SHOW on a replication
// connection of its own) whether synchronous_standby_names names it.
inline constexpr absl::Duration kSyncStandbyProbeEvery = absl::Seconds(5);

// Thread-safe: Stop may be called from any thread (the signal watcher) while Run runs.
class Service {
 public:
  // Opens (creating) the archive and takes its lock. kFailedPrecondition if it is locked.
  static absl::StatusOr<std::unique_ptr<Service>> Create(const Config& config);
  ~Service();

  // Streams every source until Stop (OK) or until every source has stopped; returns the first
  // fatal error of any source. Connection loss is retried with backoff, not fatal.
  absl::Status Run();
  void Stop();
  // SIGHUP: starts the sources `next` adds, stops those it removes, restarts those it changes
  // or that have stopped on a fatal error; the others are not touched. Archive and http
  // settings change only with a restart.
  void Reload(const Config& next);

 private:
  struct SourceRunner;
  class Outflow;
  explicit Service(Config config);
  std::vector<SourceRunner*> Runners();  // every runner so far (never shrinks)
  void StartRunner(SourceRunner* runner);
  void StopRunner(SourceRunner* runner);
  void JoinRunner(SourceRunner* runner);  // once, from whichever thread comes first
  absl::Status RunPostgres(SourceRunner* runner);
  absl::Status RunRedis(SourceRunner* runner);
  // A PostgreSQL source's change events (its logical slot), next to its WAL.
  absl::Status RunPgChanges(SourceRunner* runner);
  // The source's stream in the archive, logging a torn tail that opening it repaired.
  absl::StatusOr<storage::StreamLog*> OpenStream(const SourceConfig& sc, pipeline::StreamKind kind);
  // After a streaming session of `runner` ended with `st`: false when it was stopped on
  // request; true, after a backoff, for connection trouble (logged once per outage); any
  // other error stops the batcher and is returned.
  absl::StatusOr<bool> RetryAfter(SourceRunner* runner, const absl::Status& st, pipeline::Batcher& batcher,
                                  bool* was_down, absl::Duration* backoff);
  // Takes the source's base backups when due (full_backup_every, incremental_every), on a
  // connection of its own so streaming never waits for it. Failures are logged and retried.
  void RunBackupSchedule(SourceRunner* runner);
  // commit_delay = "auto" on a PostgreSQL source: asks its primary whether it is named a
  // synchronous standby now and every kSyncStandbyProbeEvery, and sets the delay to match
  // (no delay while that is not known). Ends with the source's streaming thread.
  void RunCommitDelayWatch(SourceRunner* runner);
  // Logs one progress line per source every `every` until the sources are done.
  void ReportProgress(absl::Duration every);
  // Runs a drill (every source, latest) when the last one is older than drill_every and
  // every source has a snapshot; saves its report in the archive for /metrics.
  void RunDrillSchedule();
  // What /healthz, /metrics and /status show.
  ServiceState State();

  const Config config_;
  std::unique_ptr<storage::Archive> archive_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool sources_done_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<SourceRunner>> runners_ ABSL_GUARDED_BY(mu_);
  std::vector<SourceConfig> sources_ ABSL_GUARDED_BY(mu_);  // as of the last (re)load
  absl::Mutex archive_mu_;  // around archive_->Stream: sources open their streams concurrently
  DiskGuard disk_guard_;
  // [kafka]: where the shippers send (brokers resolved: a mock cluster's bootstrap address).
  cross_region::KafkaOptions kafka_;
  std::unique_ptr<cross_region::MockCluster> kafka_mock_;
  // [archive] verify_mb_per_s: reads back what was archived (null when 0). Set in Run.
  std::unique_ptr<ArchiveVerifier> verifier_;
};

}  // namespace ferry::tools
