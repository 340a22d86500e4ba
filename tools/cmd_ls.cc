// ferry ls: sources, streams and the restorable window of each.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "pipeline/change_event.h"
#include "pipeline/position.h"
#include "storage/archive.h"
#include "storage/durable_file.h"
#include "storage/snapshot_store.h"
#include "tools/backup/marks.h"
#include "tools/commands.h"
#include "tools/restore/pg_restore.h"
#include "tools/restore/redis_restore.h"

namespace ferry::tools {

namespace {

// Whether a process holds the archive's writer lock (a service is running on it).
bool ArchiveLocked(const std::string& archive_path) {
  const int fd = open((archive_path + "/LOCK").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);
  return held;
}

}  // namespace

int CmdLs(const std::string& archive_path, bool json) {
  // A survey open: damage in a stream does not hide the rest (ferry verify names it).
  storage::ArchiveOptions options;
  options.survey = true;
  auto archive = storage::Archive::Open(archive_path, options);
  if (!archive.ok()) {
    // --json always prints JSON, with what went wrong in "error".
    if (json) {
      std::printf("{\"archive\":%s,\"error\":%s}\n", JsonString(archive_path).c_str(),
                  JsonString(std::string(archive.status().message())).c_str());
    }
    return json ? 1 : Fail("ls", archive.status());
  }
  bool ok = true;
  std::string out = "{\"archive\":" + JsonString(archive_path) + ",\"sources\":[";
  bool first_source = true;
  for (const std::string& src : (*archive)->Sources()) {
    auto id = (*archive)->GetIdentity(src);
    storage::SourceIdentity identity = id.ok() ? *id : storage::SourceIdentity{};
    absl::StrAppend(&out, first_source ? "" : ",", "{\"name\":", JsonString(src),
                    ",\"kind\":", JsonString(identity["kind"]),
                    ",\"system_id\":", JsonString(identity["system_id"]), ",\"streams\":[");
    first_source = false;
    const bool redis = identity["kind"] == "redis";
    if (!json) {
      if (redis) {
        std::printf("source %s (redis)\n", src.c_str());
      } else {
        std::printf("source %s (%s, system id %s)\n", src.c_str(), identity["kind"].c_str(), identity["system_id"].c_str());
      }
    }
    bool first_stream = true;
    for (pipeline::StreamKind kind : (*archive)->Streams(src)) {
      auto log = (*archive)->Stream(src, kind);
      const std::string name(pipeline::StreamKindName(kind));
      if (!log.ok()) {
        ok = false;
        absl::StrAppend(&out, first_stream ? "" : ",", "{\"stream\":", JsonString(name),
                        ",\"error\":", JsonString(std::string(log.status().message())), "}");
        first_stream = false;
        if (!json) std::printf("  %-14s cannot be read: %s\n", name.c_str(), std::string(log.status().message()).c_str());
        continue;
      }
      const auto& frames = (*log)->frames();
      uint64_t start = 0, end = 0;
      pipeline::UnixMicros first_ts = 0, last_ts = 0, first_arrival = 0, last_arrival = 0;
      uint32_t epoch = 0;
      if (!frames.empty()) {
        start = frames.front().header.start_pos;
        end = frames.back().header.end_pos;
        epoch = frames.back().header.epoch;
        first_arrival = frames.front().header.arrival_us;
        last_arrival = frames.back().header.arrival_us;
      }
      for (const auto& f : frames) {
        if (first_ts == 0 && f.header.first_data_ts != 0) first_ts = f.header.first_data_ts;
        if (f.header.last_data_ts != 0) last_ts = f.header.last_data_ts;
      }
      absl::StrAppend(&out, first_stream ? "" : ",", "{\"stream\":", JsonString(name),
                      ",\"frames\":", frames.size(), ",\"bytes\":", (*log)->total_bytes(),
                      ",\"epoch\":", epoch, ",\"start\":", JsonString(pipeline::FormatStreamPosition(kind, start)),
                      ",\"end\":", JsonString(pipeline::FormatStreamPosition(kind, end)),
                      ",\"first_data_time\":", JsonString(pipeline::FormatUnixMicros(first_ts)),
                      ",\"last_data_time\":", JsonString(pipeline::FormatUnixMicros(last_ts)),
                      ",\"first_arrival\":", JsonString(pipeline::FormatUnixMicros(first_arrival)),
                      ",\"last_arrival\":", JsonString(pipeline::FormatUnixMicros(last_arrival)),
                      ",\"files\":[");
      first_stream = false;
      const auto files = (*log)->ListFiles();
      for (size_t i = 0; i < files.size(); ++i) absl::StrAppend(&out, i ? "," : "", JsonString(files[i]));
      out += "]}";
      if (!json) {
        std::printf("  %-14s timeline/epoch %u  %s .. %s  frames=%zu bytes=%llu\n", name.c_str(), epoch,
                    pipeline::FormatStreamPosition(kind, start).c_str(), pipeline::FormatStreamPosition(kind, end).c_str(), frames.size(),
                    static_cast<unsigned long long>((*log)->total_bytes()));
        // WAL carries commit times; Redis commands only ferry's arrival time.
        std::printf("  %-14s %s %s .. %s\n", "", redis ? "arrived" : "commits",
                    pipeline::FormatUnixMicros(redis ? first_arrival : first_ts).c_str(),
                    pipeline::FormatUnixMicros(redis ? last_arrival : last_ts).c_str());
      }
    }
    out += "]";
    // Snapshots and, for PostgreSQL, the window a restore can reach.
    auto store = storage::SnapshotStore::Open((*archive)->SnapshotDir(src), false);
    if (!store.ok()) {
      ok = false;
      absl::StrAppend(&out, ",\"snapshots\":[],\"error\":", JsonString(std::string(store.status().message())), "}");
      if (!json) std::printf("  snapshots cannot be read: %s\n", std::string(store.status().message()).c_str());
      continue;
    }
    out += ",\"snapshots\":[";
    bool first_snap = true;
    for (const auto& m : (*store)->snapshots()) {
      absl::StrAppend(&out, first_snap ? "" : ",", "{\"id\":", JsonString(m.id),
                      ",\"kind\":", JsonString(m.Get("kind")), ",\"class\":", JsonString(m.Get("class")),
                      ",\"start_lsn\":", JsonString(m.Get("start_lsn")),
                      ",\"end_lsn\":", JsonString(m.Get("end_lsn")),
                      ",\"epoch\":", JsonString(m.Get("epoch")), ",\"offset\":", JsonString(m.Get("offset")),
                      ",\"replid\":", JsonString(m.Get("replid")),
                      ",\"end_time\":", JsonString(m.Get("end_time")), ",\"bytes\":", m.RawBytes(), "}");
      first_snap = false;
      if (!json && redis) {
        std::printf("  snapshot %-20s rdb  epoch %s offset %s  ended %s  %.1f MiB\n", m.id.c_str(),
                    m.Get("epoch").c_str(), m.Get("offset").c_str(), m.Get("end_time").c_str(),
                    static_cast<double>(m.RawBytes()) / (1 << 20));
      } else if (!json) {
        std::printf("  snapshot %-20s %-11s WAL %s .. %s  ended %s  %.1f MiB\n", m.id.c_str(),
                    m.Get("class").c_str(), m.Get("start_lsn").c_str(), m.Get("end_lsn").c_str(),
                    m.Get("end_time").c_str(), static_cast<double>(m.RawBytes()) / (1 << 20));
      }
    }
    out += "]";
    absl::StatusOr<RestoreWindow> window = absl::NotFoundError("");
    if (identity["kind"] == "postgres") {
      auto wal = (*archive)->Stream(src, pipeline::StreamKind::kPgWal);
      if (wal.ok()) window = PgRestorableWindow(**wal, **store);
    } else if (redis) {
      auto commands = (*archive)->Stream(src, pipeline::StreamKind::kRedisCommands);
      if (commands.ok()) window = RedisRestorableWindow(**commands, **store);
    }
    if (window.ok()) {
      const RestoreWindow& w = *window;
      if (w.valid) {
        absl::StrAppend(&out, ",\"restorable\":{\"earliest\":", JsonString(pipeline::FormatUnixMicros(w.earliest)),
                        ",\"latest\":", JsonString(pipeline::FormatUnixMicros(w.latest)), "}");
        if (!json) {
          std::printf("  restorable %s .. %s (--time inside it; --latest reaches the last %s)\n",
                      pipeline::FormatUnixMicros(w.earliest).c_str(), pipeline::FormatUnixMicros(w.latest).c_str(),
                      redis ? "archived command" : "commit");
        }
      } else {
        absl::StrAppend(&out, ",\"restorable\":null,\"not_restorable_because\":", JsonString(w.why_not));
        if (!json) std::printf("  restorable: nothing yet (%s)\n", w.why_not.c_str());
      }
    }
    out += "}";
  }
  out += "],\"marks\":[";
  auto marks = ListMarks(archive_path);
  std::string marks_error;
  if (!marks.ok()) {
    ok = false;
    marks_error = std::string(marks.status().message());
    if (!json) std::printf("marks cannot be read: %s\n", marks_error.c_str());
    marks = std::vector<Mark>{};
  }
  for (size_t i = 0; i < marks->size(); ++i) {
    const Mark& m = (*marks)[i];
    absl::StrAppend(&out, i ? "," : "", "{\"name\":", JsonString(m.name),
                    ",\"time\":", JsonString(pipeline::FormatUnixMicros(m.time)), ",\"points\":[");
    std::string text;
    for (size_t j = 0; j < m.points.size(); ++j) {
      const MarkPoint& p = m.points[j];
      const std::string at = p.kind == "postgres" ? p.lsn.ToString() : absl::StrCat(p.offset);
      absl::StrAppend(&out, j ? "," : "", "{\"source\":", JsonString(p.source), ",\"at\":", JsonString(at), "}");
      absl::StrAppend(&text, " ", p.source, "@", at);
    }
    out += "]}";
    if (!json) std::printf("mark %s at %s:%s\n", m.name.c_str(), pipeline::FormatUnixMicros(m.time).c_str(), text.c_str());
  }
  out += "]";
  // A running service with [kafka] leaves its brokers (a mock cluster's own address) in
  // ARCHIVE/KAFKA while it holds the archive's lock; a stale file (after a crash) is ignored.
  if (auto kafka = storage::ReadWholeFile(archive_path + "/KAFKA"); kafka.ok() && ArchiveLocked(archive_path)) {
    const std::string bootstrap(absl::StripAsciiWhitespace(*kafka));
    absl::StrAppend(&out, ",\"kafka\":{\"bootstrap\":", JsonString(bootstrap), "}");
    if (!json) std::printf("kafka: %s (the running service's)\n", bootstrap.c_str());
  }
  if (!marks_error.empty()) absl::StrAppend(&out, ",\"marks_error\":", JsonString(marks_error));
  out += "}";
  if (json) std::printf("%s\n", out.c_str());
  return ok ? 0 : 1;
}

}  // namespace ferry::tools
