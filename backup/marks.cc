// Marks: their text form, loading and listing them, and taking one across every source of
// a config.
#include "backup/marks.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/pg/sql.h"
#include "client/redis/client.h"
#include "client/redis/replication_file.h"
#include "pipeline/check.h"
#include "storage/archive.h"
#include "storage/durable_file.h"

namespace ferry::backup {
namespace {

constexpr char kMarksDir[] = "marks";
constexpr char kMarkSuffix[] = ".mark";

std::string MarksDir(const std::string& archive_path) { return absl::StrCat(archive_path, "/", kMarksDir); }

// Where the archive's stream of `point` ends, in the point's own terms: the timeline's last
// LSN or the epoch's last offset (0 when it has nothing there yet).
absl::StatusOr<bool> Archived(const std::string& archive_path, const MarkPoint& point) {
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  const bool pg = point.kind == "postgres";
  auto log = archive->Stream(point.source, pg ? pipeline::StreamKind::kPgWal : pipeline::StreamKind::kRedisCommands);
  if (absl::IsNotFound(log.status())) return false;
  FERRY_RETURN_IF_ERROR(log.status());
  for (auto it = (*log)->frames().rbegin(); it != (*log)->frames().rend(); ++it) {
    const uint32_t want_epoch = pg ? point.timeline : point.epoch;
    if (it->header.epoch < want_epoch) return false;
    if (it->header.epoch == want_epoch) return it->header.end_pos >= (pg ? point.lsn.value() : point.offset);
  }
  return false;
}

// The restore point pg_create_restore_point writes on a PostgreSQL source, and its timeline.
absl::StatusOr<MarkPoint> PostgresPoint(const config::SourceConfig& sc, const std::string& name) {
  auto row = client::pg::QueryFirstRow(
      sc.conninfo, "select pg_create_restore_point($1)::text, (select timeline_id from pg_control_checkpoint())::text",
      {name});
  if (!row.ok() || row->size() != 2) {
    return absl::FailedPreconditionError(absl::StrCat("source \"", sc.name, "\": pg_create_restore_point: ",
                                                      row.ok() ? "no result" : std::string(row.status().message())));
  }
  MarkPoint p{sc.name, "postgres"};
  FERRY_ASSIGN_OR_RETURN(p.lsn, pipeline::Lsn::Parse((*row)[0]));
  if (!absl::SimpleAtoi((*row)[1], &p.timeline)) {
    return absl::FailedPreconditionError(
        absl::StrCat("source \"", sc.name, "\": timeline_id \"", (*row)[1], "\" is not a number"));
  }
  return p;
}

// A Redis primary's replication offset and id.
absl::StatusOr<MarkPoint> RedisPoint(const config::SourceConfig& sc) {
  MarkPoint p{sc.name, "redis"};
  auto offset = client::redis::RedisInfoField(sc.redis, "master_repl_offset");
  auto replid = client::redis::RedisInfoField(sc.redis, "master_replid");
  if (!offset.ok() || !replid.ok() || !absl::SimpleAtoi(*offset, &p.offset)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "source \"", sc.name, "\": INFO: ", (offset.ok() ? replid.status() : offset.status()).message()));
  }
  p.replid = *replid;
  return p;
}

void UnpauseRedis(const std::vector<const config::SourceConfig*>& redis_sources) {
  for (const config::SourceConfig* sc : redis_sources) (void)client::redis::RunRedisCommand(sc->redis, {"CLIENT", "UNPAUSE"});
}

// Pauses writes on every Redis source for at most pause_ms; on failure, unpauses those paused.
absl::Status PauseRedisWrites(const std::vector<const config::SourceConfig*>& redis_sources, int64_t pause_ms) {
  for (const config::SourceConfig* sc : redis_sources) {
    auto st = client::redis::RunRedisCommand(sc->redis, {"CLIENT", "PAUSE", absl::StrCat(pause_ms), "WRITE"});
    if (!st.ok()) {
      UnpauseRedis(redis_sources);
      return absl::Status(st.status().code(), absl::StrCat("source \"", sc->name, "\": ", st.status().message()));
    }
  }
  return absl::OkStatus();
}

// Every source's point: PostgreSQL restore points first, then the Redis offsets.
absl::Status CapturePoints(const config::Config& config, const std::string& name,
                           const std::vector<const config::SourceConfig*>& redis_sources, Mark* mark) {
  for (const config::SourceConfig& sc : config.sources) {
    if (sc.kind != "postgres") continue;
    FERRY_ASSIGN_OR_RETURN(MarkPoint p, PostgresPoint(sc, name));
    mark->points.push_back(p);
  }
  for (const config::SourceConfig* sc : redis_sources) {
    FERRY_ASSIGN_OR_RETURN(MarkPoint p, RedisPoint(*sc));
    mark->points.push_back(p);
  }
  return absl::OkStatus();
}

// The epoch a Redis offset belongs to is the archive's, for the replication id it follows.
absl::Status SetRedisEpochs(const std::string& archive_path, Mark* mark) {
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  for (MarkPoint& p : mark->points) {
    if (p.kind != "redis") continue;
    auto log = archive->Stream(p.source, pipeline::StreamKind::kRedisCommands);
    auto file = log.ok() ? (*log)->GetFile(client::redis::kReplicationFile) : absl::StatusOr<std::string>(log.status());
    auto stream = file.ok() ? client::redis::ParseReplicationFile(*file)
                            : absl::StatusOr<client::redis::RedisResume>(file.status());
    if (!stream.ok() || stream->replid != p.replid) {
      return absl::FailedPreconditionError(absl::StrCat(
          "source \"", p.source, "\": the archive does not follow this primary's replication id ", p.replid,
          " (is ferry run streaming it?)"));
    }
    p.epoch = stream->epoch;
  }
  return absl::OkStatus();
}

// Waits (up to wait_seconds) until the archive holds every point of the mark.
absl::Status WaitUntilArchived(const std::string& archive_path, const Mark& mark, int wait_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_seconds);
  for (const MarkPoint& p : mark.points) {
    while (true) {
      FERRY_ASSIGN_OR_RETURN(bool archived, Archived(archive_path, p));
      if (archived) break;
      if (std::chrono::steady_clock::now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "source \"", p.source, "\": the archive has not reached ",
            p.kind == "postgres" ? p.lsn.ToString() : absl::StrCat("offset ", p.offset), " within ", wait_seconds,
            " s; is ferry run streaming it? The mark was not saved"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string FormatMark(const Mark& mark) {
  std::string out = absl::StrCat("ferry-mark 1\nname ", mark.name, "\ntime ", pipeline::FormatUnixMicros(mark.time),
                                 "\nredis_paused ", mark.redis_paused ? 1 : 0, "\n");
  for (const MarkPoint& p : mark.points) {
    if (p.kind == "postgres") {
      absl::StrAppend(&out, "source ", p.source, " postgres ", p.timeline, " ", p.lsn.ToString(), "\n");
    } else {
      absl::StrAppend(&out, "source ", p.source, " redis ", p.epoch, " ", p.offset, " ", p.replid, "\n");
    }
  }
  return out;
}

absl::StatusOr<Mark> ParseMark(absl::string_view text) {
  Mark m;
  bool header = false;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    auto bad = [&] { return absl::DataLossError(absl::StrCat("bad mark line \"", line, "\"")); };
    if (f[0] == "ferry-mark") {
      header = f.size() == 2 && f[1] == "1";
    } else if (f[0] == "name" && f.size() == 2) {
      m.name = f[1];
    } else if (f[0] == "time" && f.size() == 2) {
      auto t = pipeline::ParseRfc3339(f[1]);
      if (!t.ok()) return bad();
      m.time = *t;
    } else if (f[0] == "redis_paused" && f.size() == 2) {
      m.redis_paused = f[1] == "1";
    } else if (f[0] == "source" && f.size() == 5 && f[2] == "postgres") {
      MarkPoint p{f[1], "postgres"};
      auto lsn = pipeline::Lsn::Parse(f[4]);
      if (!lsn.ok() || !absl::SimpleAtoi(f[3], &p.timeline)) return bad();
      p.lsn = *lsn;
      m.points.push_back(p);
    } else if (f[0] == "source" && f.size() == 6 && f[2] == "redis") {
      MarkPoint p{f[1], "redis"};
      if (!absl::SimpleAtoi(f[3], &p.epoch) || !absl::SimpleAtoi(f[4], &p.offset)) return bad();
      p.replid = f[5];
      m.points.push_back(p);
    } else {
      return bad();
    }
  }
  if (!header || m.name.empty()) return absl::DataLossError("not a ferry mark (no \"ferry-mark 1\" header or name)");
  return m;
}

absl::StatusOr<Mark> LoadMark(const std::string& archive_path, const std::string& name) {
  FERRY_RETURN_IF_ERROR(storage::ValidateSourceName(name));
  auto text = storage::ReadWholeFile(absl::StrCat(MarksDir(archive_path), "/", name, kMarkSuffix));
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat("no mark \"", name, "\" in ", archive_path, " (ferry ls lists them)"));
  }
  FERRY_RETURN_IF_ERROR(text.status());
  return ParseMark(*text);
}

absl::StatusOr<std::vector<Mark>> ListMarks(const std::string& archive_path) {
  std::vector<Mark> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(MarksDir(archive_path), ec)) {
    const std::string file = e.path().filename().string();
    if (!absl::EndsWith(file, kMarkSuffix)) continue;
    FERRY_ASSIGN_OR_RETURN(Mark m, LoadMark(archive_path, file.substr(0, file.size() - strlen(kMarkSuffix))));
    out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(), [](const Mark& a, const Mark& b) { return a.time < b.time; });
  return out;
}

absl::StatusOr<Mark> TakeMark(const config::Config& config, const std::string& name, int wait_seconds) {
  if (absl::Status st = storage::ValidateSourceName(name); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("mark name: ", st.message()));
  }
  if (LoadMark(config.archive_path, name).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("mark \"", name, "\" exists already; choose another name"));
  }
  Mark mark;
  mark.name = name;
  std::vector<const config::SourceConfig*> redis_sources;
  for (const config::SourceConfig& sc : config.sources) {
    if (sc.kind == "redis") redis_sources.push_back(&sc);
  }
  // Pause Redis writes (reads go on) so that its offsets cannot move while PostgreSQL's
  // restore point is written; CLIENT PAUSE ends by itself after the bound even if we die.
  const int64_t pause_ms = absl::ToInt64Milliseconds(config.mark_pause_redis);
  if (pause_ms > 0) {
    FERRY_RETURN_IF_ERROR(PauseRedisWrites(redis_sources, pause_ms));
    mark.redis_paused = true;
  }
  absl::Status st = CapturePoints(config, name, redis_sources, &mark);
  mark.time = pipeline::NowUnixMicros();
  if (pause_ms > 0) UnpauseRedis(redis_sources);
  FERRY_RETURN_IF_ERROR(st);

  FERRY_RETURN_IF_ERROR(SetRedisEpochs(config.archive_path, &mark));
  // A mark is saved only once the archive can restore it.
  FERRY_RETURN_IF_ERROR(WaitUntilArchived(config.archive_path, mark, wait_seconds));
  const std::string dir = MarksDir(config.archive_path);
  FERRY_RETURN_IF_ERROR(storage::CreateDirectory(dir));  // the archive's modes (durable_file.h)
  FERRY_RETURN_IF_ERROR(storage::WriteFileAtomically(dir, absl::StrCat(name, kMarkSuffix), FormatMark(mark)));
  return mark;
}

}  // namespace ferry::backup
