// ferry retention: applies [retention] to every PostgreSQL source of a config now (the
// service also applies it after each scheduled backup).
#include <cstdio>

#include "backup/retention.h"
#include "config/config.h"
#include "tools/commands.h"

namespace ferry::tools {

int CmdRetention(const std::string& config_path, bool dry_run) {
  auto config = config::LoadConfig(config_path);
  if (!config.ok()) return Fail("retention", config.status());
  auto archive = storage::Archive::Open(config->archive_path, storage::ArchiveOptions{});
  if (!archive.ok()) return Fail("retention", archive.status());
  for (const config::SourceConfig& s : config->sources) {
    if (s.kind != "postgres") continue;
    auto r = backup::ApplyRetention(**archive, s.name, backup::PolicyOf(*config), pipeline::NowUnixMicros(), dry_run);
    if (!r.ok()) return Fail("retention", r.status());
    const char* verb = dry_run ? "would delete" : "deleted";
    for (const auto& id : r->snapshots) std::printf("%s: %s snapshot %s\n", s.name.c_str(), verb, id.c_str());
    for (const auto& f : r->files) std::printf("%s: %s %s\n", s.name.c_str(), verb, f.c_str());
    if (r->snapshots.empty() && r->files.empty()) std::printf("%s: nothing expired\n", s.name.c_str());
  }
  return 0;
}

}  // namespace ferry::tools
