// The long-running service (`ferry run`): one supervised streaming thread per stream, each
// wired source -> Batcher -> archive StreamLog (-> Kafka), with acknowledgements flowing back;
// beside them the schedules (backups, retention, drills), the commit_delay probe, the disk
// guard, the read-back verifier and the HTTP endpoint.
//
// Its files: service.cc (lifecycle, runners, reload), streams.cc (the streaming threads),
// source_runner.* (one stream's supervisor loop), outflow.* (batcher and shipper),
// schedules.cc, commit_delay.cc, disk_guard.*, state.cc (what /metrics shows), http.*.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "config/config.h"
#include "cross_region/kafka.h"
#include "pipeline/batcher.h"
#include "service/archive_verifier.h"
#include "service/disk_guard.h"
#include "service/http.h"
#include "storage/archive.h"

namespace ferry::service {

struct SourceRunner;
struct OutflowContext;

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
  static absl::StatusOr<std::unique_ptr<Service>> Create(const config::Config& config);
  ~Service();

  // Streams every source until Stop (OK) or until every source has stopped; returns the first
  // fatal error of any source. Connection loss is retried with backoff, not fatal.
  absl::Status Run();
  void Stop();
  // SIGHUP: starts the sources `next` adds, stops those it removes, restarts those it changes
  // or that have stopped on a fatal error; the others are not touched. Archive and http
  // settings change only with a restart.
  void Reload(const config::Config& next);

 private:
  explicit Service(config::Config config);
  std::vector<SourceRunner*> Runners();  // every runner so far (never shrinks)
  void StartRunner(SourceRunner* runner);
  void StopRunner(SourceRunner* runner);
  void JoinRunner(SourceRunner* runner);  // once, from whichever thread comes first
  // The streaming threads (streams.cc): each returns when its runner is stopped (OK) or on a
  // fatal error; connection loss is retried inside.
  absl::Status RunPostgres(SourceRunner* runner);
  absl::Status RunRedis(SourceRunner* runner);
  // A PostgreSQL source's change events (its logical slot), next to its WAL.
  absl::Status RunPgChanges(SourceRunner* runner);
  // The source's stream in the archive, logging a torn tail that opening it repaired.
  absl::StatusOr<storage::StreamLog*> OpenStream(const config::SourceConfig& sc, pipeline::StreamKind kind);
  // What each stream's Outflow takes from the service.
  OutflowContext OutflowContextFor();
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

  const config::Config config_;
  std::unique_ptr<storage::Archive> archive_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool sources_done_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<SourceRunner>> runners_ ABSL_GUARDED_BY(mu_);
  std::vector<config::SourceConfig> sources_ ABSL_GUARDED_BY(mu_);  // as of the last (re)load
  absl::Mutex archive_mu_;  // around archive_->Stream: sources open their streams concurrently
  DiskGuard disk_guard_;
  // [kafka]: where the shippers send (brokers resolved: a mock cluster's bootstrap address).
  cross_region::KafkaOptions kafka_;
  std::unique_ptr<cross_region::MockCluster> kafka_mock_;
  // [archive] verify_mb_per_s: reads back what was archived (null when 0). Set in Run.
  std::unique_ptr<ArchiveVerifier> verifier_;
};

}  // namespace ferry::service
