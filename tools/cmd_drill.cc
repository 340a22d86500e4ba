// ferry drill: restore every source into scratch servers, check them, report RTO and RPO.
#include <cstdio>

#include "tools/commands.h"
#include "tools/restore/drill.h"
#include "tools/sandbox/pg_steps.h"
#include "tools/service/config.h"

namespace ferry::tools {

int CmdDrill(const std::string& config_path, const std::string& target, bool json) {
  auto config = LoadConfig(config_path);
  if (!config.ok()) return Fail("drill", config.status());
  auto report = RunDrill(*config, target, SelfExecutable());
  if (!report.ok()) return Fail("drill", report.status());
  std::printf("%s", json ? (DrillJson(*report) + "\n").c_str() : DrillTable(*report).c_str());
  if (absl::Status st = SaveLastDrill(config->archive_path, *report); !st.ok()) {
    std::fprintf(stderr, "ferry drill: the report was not saved in the archive: %s\n", std::string(st.message()).c_str());
  }
  if (report->ok()) return 0;
  // One line per failed check on stderr, naming the source and the check.
  for (const SourceDrill& s : report->sources) {
    for (const DrillCheck& c : s.checks) {
      if (!c.ok) std::fprintf(stderr, "ferry drill: source \"%s\": check %s failed: %s\n", s.source.c_str(), c.name.c_str(), c.detail.c_str());
    }
  }
  return 1;
}

}  // namespace ferry::tools
