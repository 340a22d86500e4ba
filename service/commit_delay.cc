// commit_delay = "auto": the probe that asks a PostgreSQL source's primary whether it names
// the stream in synchronous_standby_names, and sets the stream's group-commit delay to match.
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/types/optional.h"
#include "client/pg/replication_conn.h"
#include "pipeline/check.h"
#include "service/service.h"
#include "service/source_runner.h"

namespace ferry::service {

void Service::RunCommitDelayWatch(SourceRunner* runner) {
  const config::SourceConfig& sc = *runner->config;
  const bool logical = sc.kind == kPgChangesKind;
  const std::string stream = logical ? " stream=pg-changes" : "";
  // The setting has to name the stream's own connection; the probe connects under another name.
  const std::string app = StreamApplicationName(sc);
  // Unknown (before the first answer, or once two probes in a row failed) counts as named:
  // no delay is the safe guess while the primary cannot say whether commits wait on us.
  absl::optional<bool> named;
  absl::optional<absl::Duration> applied;
  int failures = 0;
  while (!runner->ended) {
    // Connecting and SHOW are bounded (10 s each), which bounds how long a stop may wait
    // for a probe under way.
    absl::StatusOr<std::string> setting = [&]() -> absl::StatusOr<std::string> {
      FERRY_ASSIGN_OR_RETURN(auto conn, client::pg::ReplicationConnection::Connect(
                                            sc.conninfo, absl::StrCat(app, "_probe"), logical));
      return conn->Show("synchronous_standby_names", 10000);
    }();
    if (setting.ok()) {
      failures = 0;
      named = client::pg::NamesSynchronousStandby(*setting, app);
    } else {
      if (++failures == 1) {
        spdlog::warn("source={}{} event=commit_delay_probe_failed error=\"{}\"", sc.name, stream,
                     std::string(setting.status().message()));
      }
      if (failures >= 2) named.reset();
    }
    const absl::Duration delay = named.value_or(true) ? absl::ZeroDuration() : AutoCommitDelay();
    if (applied != delay) {
      applied = delay;
      spdlog::info("source={}{} event=commit_delay value={} reason=\"{}\"", sc.name, stream, absl::FormatDuration(delay),
                   !named.has_value() ? std::string("the primary does not answer the probe")
                   : *named           ? absl::StrCat("synchronous_standby_names names ", app)
                                      : absl::StrCat("asynchronous: synchronous_standby_names does not name ", app));
      absl::MutexLock lock(&runner->mu);
      runner->commit_delay = delay;
      if (runner->batcher != nullptr) runner->batcher->SetCommitDelay(delay);
    }
    absl::MutexLock lock(&runner->mu);
    if (runner->mu.AwaitWithTimeout(absl::Condition(&runner->stop), kSyncStandbyProbeEvery)) return;
  }
}

}  // namespace ferry::service
