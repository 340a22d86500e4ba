// `ferry restore all`: every source of an archive to one instant of ferry's own clock, or to
// a mark, each into DIR/<source>/ (one clock for every source: docs/design.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "local/local_postgres.h"
#include "local/local_redis.h"
#include "pipeline/position.h"

namespace ferry::restore {

struct AllTarget {
  pipeline::UnixMicros time = 0;  // what ferry had archived at this instant ...
  std::string mark;               // ... or exactly this mark (set: time is ignored)
  bool latest = false;            // ... or everything archived
};

struct SourceRestored {
  std::string source;
  std::string kind;      // "postgres" / "redis"
  std::string dir;       // DIR/<source>
  std::string point;     // the target as that source's position ("lsn 0/3000000", "offset 1234")
  std::string summary;   // RestorePostgresTo's / RestoreRedisTo's line
  pipeline::Lsn must_reach;  // PostgreSQL: PgRestored::must_reach
};

// Restores every source; the first failure stops it and names the source. PostgreSQL goes to
// the LSN ferry had synced at the instant (its last frame that arrived by then), stopping
// before the first record at or after it, or to the mark's restore point; Redis to the
// commands it had archived by then, or to the mark's offset.
absl::StatusOr<std::vector<SourceRestored>> RestoreAllTo(const std::string& archive_path, const AllTarget& target,
                                                         const std::string& to, const std::string& ferry_binary);

// Starts a restored PostgreSQL data directory, waits until recovery has finished, and
// describes the point reached (last replayed commit, LSN, timeline). A valid `must_reach`
// (PgRestored's) that replay fell short of is kDataLoss, with the server stopped. pg_bin
// names the server binaries (local::PgServerBinDir; empty: found by the directory's major).
struct PgStarted {
  std::unique_ptr<local::LocalPostgres> server;
  std::string reached;
  pipeline::UnixMicros last_commit = 0;  // 0 when no commit was replayed
};
absl::StatusOr<PgStarted> StartRestoredPostgres(const std::string& dir, int port, int timeout_seconds,
                                                 pipeline::Lsn must_reach = pipeline::Lsn(),
                                                 const std::string& pg_bin = "");

// Starts redis-server on a restored AOF directory and waits until all of it has loaded.
absl::StatusOr<std::unique_ptr<local::LocalRedis>> StartRestoredRedis(const std::string& dir, int port);

}  // namespace ferry::restore
