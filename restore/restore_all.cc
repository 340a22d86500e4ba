#include "restore/restore_all.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "backup/marks.h"
#include "pipeline/check.h"
#include "restore/pg_restore.h"
#include "restore/recover.h"
#include "restore/redis_restore.h"
#include "storage/archive.h"

namespace ferry::restore {
namespace {

// The end of the last frame of `kind` that ferry had closed by `time`, with its epoch.
struct ClockPoint {
  bool found = false;
  bool at_end = false;  // it is the stream's last frame
  uint32_t epoch = 0;
  uint64_t pos = 0;
  pipeline::UnixMicros arrival = 0;  // when ferry closed that frame
};

absl::StatusOr<ClockPoint> PointAt(storage::Archive& archive, const std::string& source, pipeline::StreamKind kind,
                                   pipeline::UnixMicros time) {
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, archive.Stream(source, kind));
  ClockPoint p;
  const auto& frames = log->frames();
  for (size_t i = 0; i < frames.size(); ++i) {
    if (frames[i].header.arrival_us > time) break;
    p = ClockPoint{true, i + 1 == frames.size(), frames[i].header.epoch, frames[i].header.end_pos,
                   frames[i].header.arrival_us};
  }
  return p;
}

}  // namespace

absl::StatusOr<std::vector<SourceRestored>> RestoreAllTo(const std::string& archive_path, const AllTarget& target,
                                                         const std::string& to, const std::string& ferry_binary) {
  FERRY_RETURN_IF_ERROR(CheckEmptyTarget(to));
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  backup::Mark mark;
  if (!target.mark.empty()) {
    FERRY_ASSIGN_OR_RETURN(mark, backup::LoadMark(archive_path, target.mark));
  }
  std::vector<SourceRestored> out;
  for (const std::string& source : archive->Sources()) {
    auto identity = archive->GetIdentity(source);
    if (!identity.ok()) continue;  // a source that never streamed has nothing to restore
    SourceRestored r{source, (*identity)["kind"], absl::StrCat(to, "/", source)};
    auto fail = [&](const absl::Status& st) {
      return absl::Status(st.code(), absl::StrCat("source \"", source, "\": ", st.message()));
    };
    const backup::MarkPoint* at_mark = nullptr;
    for (const backup::MarkPoint& p : mark.points) {
      if (p.source == source) at_mark = &p;
    }
    if (!target.mark.empty() && at_mark == nullptr) {
      return fail(absl::NotFoundError(absl::StrCat("mark \"", target.mark, "\" has no point for it")));
    }
    absl::StatusOr<std::string> summary;
    if (r.kind == "postgres") {
      PgTarget t;
      if (at_mark != nullptr) {
        t.kind = PgTarget::Kind::kLsn;
        t.lsn = at_mark->lsn;
        t.inclusive = false;
        r.point = absl::StrCat("lsn ", t.lsn.ToString(), " (restore point \"", target.mark, "\")");
      } else if (!target.latest) {
        FERRY_ASSIGN_OR_RETURN(ClockPoint p, PointAt(*archive, source, pipeline::StreamKind::kPgWal, target.time));
        if (!p.found) {
          return fail(absl::OutOfRangeError(absl::StrCat("ferry had archived no WAL by ",
                                                         pipeline::FormatUnixMicros(target.time))));
        }
        if (!p.at_end) {
          // Stop before the first record ferry had not received by then; at the archive's
          // end, recovery replays everything (a target there would never be reached).
          t.kind = PgTarget::Kind::kLsn;
          t.lsn = pipeline::Lsn(p.pos);
          t.inclusive = false;
        }
        r.point = absl::StrCat("lsn ", pipeline::Lsn(p.pos).ToString(), " (archived at ", pipeline::FormatUnixMicros(p.arrival),
                               p.at_end ? ", the end of the archive)" : ")");
      } else {
        r.point = "latest";
      }
      auto pg = RestorePostgresTo(archive_path, source, t, r.dir, ferry_binary);
      if (pg.ok()) r.must_reach = pg->must_reach;
      summary = pg.ok() ? absl::StatusOr<std::string>(pg->summary) : pg.status();
    } else if (r.kind == "redis") {
      RedisTarget t;
      if (at_mark != nullptr) {
        t.kind = RedisTarget::Kind::kOffset;
        t.offset = at_mark->offset;
        r.point = absl::StrCat("offset ", t.offset, " (mark \"", target.mark, "\")");
      } else if (!target.latest) {
        t.kind = RedisTarget::Kind::kTime;
        t.time = target.time;
        FERRY_ASSIGN_OR_RETURN(ClockPoint p,
                               PointAt(*archive, source, pipeline::StreamKind::kRedisCommands, target.time));
        r.point = p.found ? absl::StrCat("offset ", p.pos, " (archived at ", pipeline::FormatUnixMicros(p.arrival), ")")
                          : "its first snapshot";
      } else {
        r.point = "latest";
      }
      summary = RestoreRedisTo(archive_path, source, t, r.dir);
    } else {
      continue;
    }
    if (!summary.ok()) return fail(summary.status());
    r.summary = *summary;
    out.push_back(std::move(r));
  }
  if (out.empty()) return absl::NotFoundError(absl::StrCat("the archive ", archive_path, " has no source to restore"));
  return out;
}

absl::StatusOr<PgStarted> StartRestoredPostgres(const std::string& dir, int port, int timeout_seconds,
                                                 pipeline::Lsn must_reach, const std::string& pg_bin) {
  PgStarted s;
  FERRY_ASSIGN_OR_RETURN(s.server, local::LocalPostgres::StartExisting(dir, port, pg_bin));
  FERRY_RETURN_IF_ERROR(WaitForRecoveryEnd(*s.server, timeout_seconds));
  FERRY_ASSIGN_OR_RETURN(
      std::string reached,
      s.server->Query("select coalesce(to_char(pg_last_xact_replay_timestamp() at time zone 'UTC', "
                      "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'none'), pg_current_wal_lsn(), "
                      "(select timeline_id from pg_control_checkpoint()), pg_last_wal_replay_lsn()"));
  std::vector<std::string> f = absl::StrSplit(reached, '|');
  f.resize(4);
  if (must_reach.valid()) {
    // PostgreSQL refuses to promote short of an explicit target; this checks it did not.
    auto replayed = pipeline::Lsn::Parse(f[3]);
    if (!replayed.ok() || *replayed < must_reach) {
      const std::string log = s.server->log_path();
      (void)s.server->Stop();
      return absl::DataLossError(absl::StrCat("recovery of ", dir, " replayed WAL to ", f[3], ", short of ",
                                              must_reach.ToString(), " that the restore needs; the server is stopped "
                                              "(log ", log, ")"));
    }
  }
  if (auto t = pipeline::ParseRfc3339(f[0]); t.ok()) s.last_commit = *t;
  s.reached = absl::StrCat("last replayed commit at ", f[0], "; promoted, now at ", f[1], " on timeline ", f[2]);
  return s;
}

absl::StatusOr<std::unique_ptr<local::LocalRedis>> StartRestoredRedis(const std::string& dir, int port) {
  local::LocalRedisOptions o;
  o.dir = dir;
  o.port = port;
  o.args = {"--appendonly", "yes", "--appenddirname", kAofDirName, "--appendfilename", kAofFileName};
  return local::LocalRedis::Start(o);
}

}  // namespace ferry::restore
