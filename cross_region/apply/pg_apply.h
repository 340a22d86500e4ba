// A standby PostgreSQL database in the standby region kept in step, table by table, with the
// change events of the mirror's archive (`[mirror] apply_postgres`).
//
// Transactions are applied in commit order, each in one standby transaction that also records
// its end LSN in ferry.apply_state: a restart (of the mirror, of the standby) resumes after the
// last one applied, neither skipping nor repeating any. Rows are applied idempotently by key
// (inserts are upserts), and the standby's tables follow the primary's shape: a missing table
// is created (columns, types, primary key), added columns are added, dropped ones dropped and
// renamed ones (same position, same type) renamed.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ferry::cross_region {

struct PgApplyOptions {
  std::string archive_path;  // the mirror's archive (read, never written)
  // The PostgreSQL source whose events to apply; empty: the first of `sources` whose
  // pg-changes stream is in the archive (looked up until one is).
  std::string source;
  std::vector<std::string> sources;
  std::string conninfo;  // the standby database
};

struct PgApplyStats {
  std::atomic<uint64_t> applied_lsn{0};  // end LSN of the last transaction applied
  std::atomic<uint64_t> transactions{0};
  std::atomic<uint64_t> events{0};
};

// Applies on a thread of its own. Trouble (the standby down, a statement it refuses) is
// logged and retried from the last applied transaction; nothing is ever skipped.
class PgApplier {
 public:
  static std::unique_ptr<PgApplier> Start(PgApplyOptions options);
  ~PgApplier();  // Stop()
  void Stop();
  const PgApplyStats& stats() const { return stats_; }

 private:
  explicit PgApplier(PgApplyOptions options) : options_(std::move(options)) {}
  void Run();
  absl::Status Session();

  const PgApplyOptions options_;
  PgApplyStats stats_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace ferry::cross_region
