// ferry drill: restore every source into scratch servers, check them, report RTO and RPO.
#include <cstdio>

#include "config/config.h"
#include "local/process.h"
#include "restore/drill.h"
#include "tools/commands.h"

namespace ferry::tools {

int CmdDrill(const std::string& config_path, const std::string& target, bool json, const std::string& pg_bin) {
  auto config = config::LoadConfig(config_path);
  if (!config.ok()) return Fail("drill", config.status());
  if (!pg_bin.empty()) {
    for (config::SourceConfig& sc : config->sources) sc.pg_bin = pg_bin;
  }
  auto report = restore::RunDrill(*config, target, local::SelfExecutable());
  if (!report.ok()) return Fail("drill", report.status());
  std::printf("%s", json ? (restore::DrillJson(*report) + "\n").c_str() : restore::DrillTable(*report).c_str());
  if (absl::Status st = restore::SaveLastDrill(config->archive_path, *report); !st.ok()) {
    std::fprintf(stderr, "ferry drill: the report was not saved in the archive: %s\n", std::string(st.message()).c_str());
  }
  if (report->ok()) return 0;
  // One line per failed check on stderr, naming the source and the check.
  for (const restore::SourceDrill& s : report->sources) {
    for (const restore::DrillCheck& c : s.checks) {
      if (!c.ok) std::fprintf(stderr, "ferry drill: source \"%s\": check %s failed: %s\n", s.source.c_str(), c.name.c_str(), c.detail.c_str());
    }
  }
  return 1;
}

}  // namespace ferry::tools
