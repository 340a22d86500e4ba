// ferry mark: a named point where every source of the config agrees, restorable exactly.
#include <cstdio>

#include "backup/marks.h"
#include "config/config.h"
#include "tools/commands.h"

namespace ferry::tools {

int CmdMark(const std::string& config_path, const std::string& name, int wait_seconds) {
  auto config = config::LoadConfig(config_path);
  if (!config.ok()) return Fail("mark", config.status());
  auto mark = backup::TakeMark(*config, name, wait_seconds);
  if (!mark.ok()) return Fail("mark", mark.status());
  std::printf("mark \"%s\" at %s%s\n", mark->name.c_str(), pipeline::FormatUnixMicros(mark->time).c_str(),
              mark->redis_paused ? " (Redis writes paused around it)" : "");
  for (const backup::MarkPoint& p : mark->points) {
    if (p.kind == "postgres") {
      std::printf("  %-16s postgres  restore point at %s (timeline %u)\n", p.source.c_str(), p.lsn.ToString().c_str(),
                  p.timeline);
    } else {
      std::printf("  %-16s redis     offset %llu (epoch %u, replid %s)\n", p.source.c_str(),
                  static_cast<unsigned long long>(p.offset), p.epoch, p.replid.c_str());
    }
  }
  return 0;
}

}  // namespace ferry::tools
