// Named consistent points (`ferry mark`): one moment captured on every source of a config,
// stored in the archive as marks/<name>.mark, restored exactly by `ferry restore all --mark`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "pipeline/position.h"

namespace ferry::backup {

struct MarkPoint {
  std::string source;
  std::string kind;  // "postgres" or "redis"
  // postgres: the restore point pg_create_restore_point wrote, and its timeline
  pipeline::Lsn lsn;
  uint32_t timeline = 0;
  // redis: the stream epoch of the archive, the replication offset and id at the mark
  uint32_t epoch = 0;
  uint64_t offset = 0;
  std::string replid;
};

struct Mark {
  std::string name;
  pipeline::UnixMicros time = 0;  // ferry's clock when the mark was taken
  bool redis_paused = false;      // Redis writes were paused (CLIENT PAUSE WRITE) around it
  std::vector<MarkPoint> points;
};

// Text form, docs/archive-format.md "Marks".
std::string FormatMark(const Mark& mark);
absl::StatusOr<Mark> ParseMark(absl::string_view text);

// marks/<name>.mark of the archive at `archive_path`; kNotFound naming the mark.
absl::StatusOr<Mark> LoadMark(const std::string& archive_path, const std::string& name);
// Every mark, oldest first.
absl::StatusOr<std::vector<Mark>> ListMarks(const std::string& archive_path);

// Takes mark `name` on every source of `config`: pauses Redis writes for at most
// config.mark_pause_redis (when set), creates a PostgreSQL restore point named `name`,
// reads each Redis primary's replication offset, unpauses; then waits (up to
// `wait_seconds`) until the archive holds every position, and saves the mark. Names are
// like source names; an existing name is kAlreadyExists. Errors name the source.
absl::StatusOr<Mark> TakeMark(const config::Config& config, const std::string& name, int wait_seconds);

}  // namespace ferry::backup
