// ferry restore redis: point-in-time restore of a Redis source into a new AOF directory,
// optionally started.
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "restore/redis_restore.h"
#include "restore/restore_all.h"
#include "tools/commands.h"

namespace ferry::tools {
namespace {

absl::StatusOr<restore::RedisTarget> ParseTarget(const RedisRestoreArgs& a) {
  const int given = !a.time.empty() + !a.offset.empty() + (a.latest ? 1 : 0);
  if (given != 1) return absl::InvalidArgumentError("give exactly one of --time, --offset, --latest");
  restore::RedisTarget t;
  if (!a.time.empty()) {
    t.kind = restore::RedisTarget::Kind::kTime;
    auto time = pipeline::ParseRfc3339(a.time);
    if (!time.ok()) return absl::InvalidArgumentError(time.status().message());
    t.time = *time;
  } else if (!a.offset.empty()) {
    t.kind = restore::RedisTarget::Kind::kOffset;
    if (!absl::SimpleAtoi(a.offset, &t.offset)) {
      return absl::InvalidArgumentError(absl::StrCat("--offset ", a.offset, ": not a replication offset"));
    }
  }
  return t;
}

}  // namespace

int CmdRestoreRedis(const RedisRestoreArgs& args) {
  auto target = ParseTarget(args);
  if (!target.ok()) return Fail("restore redis", target.status());
  auto summary = restore::RestoreRedisTo(args.archive, args.source, *target, args.to);
  if (!summary.ok()) return Fail("restore redis", summary.status());
  std::printf("%s\n", summary->c_str());
  if (!args.start) {
    std::printf("start it with: redis-server --dir %s --appendonly yes\n", args.to.c_str());
    return 0;
  }
  auto redis = restore::StartRestoredRedis(args.to, args.port);
  if (!redis.ok()) return Fail("restore redis", redis.status());
  auto keys = (*redis)->Command({"DBSIZE"});
  std::printf("redis-server pid %d on 127.0.0.1:%d has loaded the restore (%s keys in db 0); it keeps running\n",
              (*redis)->pid(), (*redis)->port(), keys.ok() ? keys->c_str() : "?");
  (*redis)->Detach();
  return 0;
}

}  // namespace ferry::tools
