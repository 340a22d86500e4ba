// `ferry drill`: an automated restore test. Every source of a config is restored from the
// archive alone into a scratch directory, started on a free loopback port and checked; the
// report gives RTO and RPO per source and fails naming the source and the check.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "pipeline/position.h"

namespace ferry::restore {

struct DrillCheck {
  std::string name;  // restore, recovery, pg_amcheck, rows, load, keys
  bool ok = false;
  std::string detail;
};

struct SourceDrill {
  std::string source, kind;
  std::string target;         // "latest" or the RFC 3339 instant
  double rto_seconds = 0;     // from the start of the restore to a server answering at the target
  double rpo_seconds = 0;     // target instant minus the instant of the point reached
  std::vector<DrillCheck> checks;
  bool ok() const;
};

struct DrillReport {
  pipeline::UnixMicros started = 0;
  std::vector<SourceDrill> sources;
  bool ok() const;
};

// target: "latest", "random" (a uniformly drawn instant inside each source's restorable
// window) or an RFC 3339 instant. Only a bad target is an error; everything that fails in a
// drill is a failed check in the report.
absl::StatusOr<DrillReport> RunDrill(const config::Config& config, const std::string& target, const std::string& ferry_binary);

std::string DrillTable(const DrillReport& report);  // for a terminal
std::string DrillJson(const DrillReport& report);
absl::StatusOr<DrillReport> ParseDrillJson(absl::string_view json);

// The last drill's report lives in the archive (drills/last.json), written by `ferry drill`
// and by the service's schedule, so that /metrics and /healthz show it across restarts.
absl::Status SaveLastDrill(const std::string& archive_path, const DrillReport& report);
// kNotFound when no drill ran yet.
absl::StatusOr<DrillReport> LoadLastDrill(const std::string& archive_path);

}  // namespace ferry::restore
