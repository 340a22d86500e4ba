// ferry restore all: every source of the archive to one instant of ferry's clock, or a mark.
#include <cstdio>

#include "local/process.h"
#include "restore/restore_all.h"
#include "tools/commands.h"

namespace ferry::tools {

int CmdRestoreAll(const AllRestoreArgs& args) {
  const int given = !args.time.empty() + !args.mark.empty() + (args.latest ? 1 : 0);
  if (given != 1) return Fail("restore all", absl::InvalidArgumentError("give exactly one of --time, --mark, --latest"));
  restore::AllTarget target;
  target.mark = args.mark;
  target.latest = args.latest;
  if (!args.time.empty()) {
    auto t = pipeline::ParseRfc3339(args.time);
    if (!t.ok()) return Fail("restore all", absl::InvalidArgumentError(t.status().message()));
    target.time = *t;
  }
  auto restored = restore::RestoreAllTo(args.archive, target, args.to, local::SelfExecutable());
  if (!restored.ok()) return Fail("restore all", restored.status());
  for (const restore::SourceRestored& r : *restored) {
    std::printf("%s (%s) to %s: %s\n", r.source.c_str(), r.kind.c_str(), r.point.c_str(), r.summary.c_str());
  }
  if (!args.start) return 0;
  for (const restore::SourceRestored& r : *restored) {
    if (r.kind == "postgres") {
      auto pg = restore::StartRestoredPostgres(r.dir, 0, args.timeout_seconds, r.must_reach, args.pg_bin);
      if (!pg.ok()) return Fail("restore all", absl::Status(pg.status().code(), r.source + ": " + std::string(pg.status().message())));
      std::printf("%s: %s; running on 127.0.0.1:%d\n", r.source.c_str(), pg->reached.c_str(), pg->server->port());
      pg->server->Detach();
    } else {
      auto redis = restore::StartRestoredRedis(r.dir, 0);
      if (!redis.ok()) return Fail("restore all", absl::Status(redis.status().code(), r.source + ": " + std::string(redis.status().message())));
      std::printf("%s: redis-server loaded; running on 127.0.0.1:%d\n", r.source.c_str(), (*redis)->port());
      (*redis)->Detach();
    }
  }
  return 0;
}

}  // namespace ferry::tools
