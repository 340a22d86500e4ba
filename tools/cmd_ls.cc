// ferry ls: sources, streams and the restorable window of each.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "backup/marks.h"
#include "pipeline/change_event.h"
#include "pipeline/position.h"
#include "restore/pg_restore.h"
#include "restore/redis_restore.h"
#include "storage/archive.h"
#include "storage/durable_file.h"
#include "storage/snapshot_store.h"
#include "tools/commands.h"

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

// One stream as ls shows it, or why it cannot be read.
struct StreamListing {
  pipeline::StreamKind kind;
  std::string name;
  std::string error;  // set: the stream cannot be read (nothing below is known)
  size_t frames = 0;
  uint64_t bytes = 0;
  uint32_t epoch = 0;
  uint64_t start = 0, end = 0;
  pipeline::UnixMicros first_ts = 0, last_ts = 0, first_arrival = 0, last_arrival = 0;
  std::vector<std::string> files;
};

// One source: its streams, snapshots and, for PostgreSQL, the window a restore can reach.
struct SourceListing {
  std::string name;
  storage::SourceIdentity identity;
  std::vector<StreamListing> streams;
  std::unique_ptr<storage::SnapshotStore> store;
  std::string store_error;  // set: no store, and so no window
  absl::StatusOr<restore::RestoreWindow> window = absl::NotFoundError("");

  bool redis() const { return kind() == "redis"; }
  std::string kind() const { return Identity("kind"); }
  std::string Identity(const std::string& key) const {
    const auto it = identity.find(key);
    return it == identity.end() ? "" : it->second;
  }
};

// Everything ls shows of an archive.
struct Listing {
  std::vector<SourceListing> sources;
  std::vector<backup::Mark> marks;
  std::string marks_error;
  std::optional<std::string> kafka_bootstrap;  // the running service's, when it has [kafka]
  bool ok = true;  // false: something could not be read
};

StreamListing ListStream(storage::Archive& archive, const std::string& src, pipeline::StreamKind kind) {
  StreamListing s;
  s.kind = kind;
  s.name = std::string(pipeline::StreamKindName(kind));
  auto log = archive.Stream(src, kind);
  if (!log.ok()) {
    s.error = std::string(log.status().message());
    return s;
  }
  const auto& frames = (*log)->frames();
  if (!frames.empty()) {
    s.start = frames.front().header.start_pos;
    s.end = frames.back().header.end_pos;
    s.epoch = frames.back().header.epoch;
    s.first_arrival = frames.front().header.arrival_us;
    s.last_arrival = frames.back().header.arrival_us;
  }
  for (const auto& f : frames) {
    if (s.first_ts == 0 && f.header.first_data_ts != 0) s.first_ts = f.header.first_data_ts;
    if (f.header.last_data_ts != 0) s.last_ts = f.header.last_data_ts;
  }
  s.frames = frames.size();
  s.bytes = (*log)->total_bytes();
  s.files = (*log)->ListFiles();
  return s;
}

SourceListing ListSource(storage::Archive& archive, const std::string& src) {
  SourceListing s;
  s.name = src;
  if (auto id = archive.GetIdentity(src); id.ok()) s.identity = *std::move(id);
  for (pipeline::StreamKind kind : archive.Streams(src)) s.streams.push_back(ListStream(archive, src, kind));
  auto store = storage::SnapshotStore::Open(archive.SnapshotDir(src), false);
  if (!store.ok()) {
    s.store_error = std::string(store.status().message());
    return s;
  }
  s.store = *std::move(store);
  if (s.kind() == "postgres") {
    auto wal = archive.Stream(src, pipeline::StreamKind::kPgWal);
    if (wal.ok()) s.window = restore::PgRestorableWindow(**wal, *s.store);
  } else if (s.redis()) {
    auto commands = archive.Stream(src, pipeline::StreamKind::kRedisCommands);
    if (commands.ok()) s.window = restore::RedisRestorableWindow(**commands, *s.store);
  }
  return s;
}

Listing ListArchive(storage::Archive& archive, const std::string& archive_path) {
  Listing l;
  for (const std::string& src : archive.Sources()) {
    l.sources.push_back(ListSource(archive, src));
    const SourceListing& s = l.sources.back();
    for (const StreamListing& stream : s.streams) l.ok = l.ok && stream.error.empty();
    l.ok = l.ok && s.store_error.empty();
  }
  auto marks = backup::ListMarks(archive_path);
  if (marks.ok()) {
    l.marks = *std::move(marks);
  } else {
    l.ok = false;
    l.marks_error = std::string(marks.status().message());
  }
  // A running service with [kafka] leaves its brokers (a mock cluster's own address) in
  // ARCHIVE/KAFKA while it holds the archive's lock; a stale file (after a crash) is ignored.
  if (auto kafka = storage::ReadWholeFile(archive_path + "/KAFKA"); kafka.ok() && ArchiveLocked(archive_path)) {
    l.kafka_bootstrap = std::string(absl::StripAsciiWhitespace(*kafka));
  }
  return l;
}

void PrintStreamText(const StreamListing& s, bool redis) {
  if (!s.error.empty()) {
    std::printf("  %-14s cannot be read: %s\n", s.name.c_str(), s.error.c_str());
    return;
  }
  std::printf("  %-14s timeline/epoch %u  %s .. %s  frames=%zu bytes=%llu\n", s.name.c_str(), s.epoch,
              pipeline::FormatStreamPosition(s.kind, s.start).c_str(), pipeline::FormatStreamPosition(s.kind, s.end).c_str(),
              s.frames, static_cast<unsigned long long>(s.bytes));
  // WAL carries commit times; Redis commands only ferry's arrival time.
  std::printf("  %-14s %s %s .. %s\n", "", redis ? "arrived" : "commits",
              pipeline::FormatUnixMicros(redis ? s.first_arrival : s.first_ts).c_str(),
              pipeline::FormatUnixMicros(redis ? s.last_arrival : s.last_ts).c_str());
}

void PrintSourceText(const SourceListing& s) {
  if (s.redis()) {
    std::printf("source %s (redis)\n", s.name.c_str());
  } else {
    std::printf("source %s (%s, system id %s)\n", s.name.c_str(), s.kind().c_str(), s.Identity("system_id").c_str());
  }
  for (const StreamListing& stream : s.streams) PrintStreamText(stream, s.redis());
  if (s.store == nullptr) {
    std::printf("  snapshots cannot be read: %s\n", s.store_error.c_str());
    return;
  }
  for (const auto& m : s.store->snapshots()) {
    if (s.redis()) {
      std::printf("  snapshot %-20s rdb  epoch %s offset %s  ended %s  %.1f MiB\n", m.id.c_str(),
                  m.Get("epoch").c_str(), m.Get("offset").c_str(), m.Get("end_time").c_str(),
                  static_cast<double>(m.RawBytes()) / (1 << 20));
    } else {
      std::printf("  snapshot %-20s %-11s WAL %s .. %s  ended %s  %.1f MiB\n", m.id.c_str(),
                  m.Get("class").c_str(), m.Get("start_lsn").c_str(), m.Get("end_lsn").c_str(),
                  m.Get("end_time").c_str(), static_cast<double>(m.RawBytes()) / (1 << 20));
    }
  }
  if (!s.window.ok()) return;
  if (s.window->valid) {
    std::printf("  restorable %s .. %s (--time inside it; --latest reaches the last %s)\n",
                pipeline::FormatUnixMicros(s.window->earliest).c_str(),
                pipeline::FormatUnixMicros(s.window->latest).c_str(), s.redis() ? "archived command" : "commit");
  } else {
    std::printf("  restorable: nothing yet (%s)\n", s.window->why_not.c_str());
  }
}

void PrintText(const Listing& l) {
  for (const SourceListing& s : l.sources) PrintSourceText(s);
  if (!l.marks_error.empty()) std::printf("marks cannot be read: %s\n", l.marks_error.c_str());
  for (const backup::Mark& m : l.marks) {
    std::string text;
    for (const backup::MarkPoint& p : m.points) {
      absl::StrAppend(&text, " ", p.source, "@", p.kind == "postgres" ? p.lsn.ToString() : absl::StrCat(p.offset));
    }
    std::printf("mark %s at %s:%s\n", m.name.c_str(), pipeline::FormatUnixMicros(m.time).c_str(), text.c_str());
  }
  if (l.kafka_bootstrap) std::printf("kafka: %s (the running service's)\n", l.kafka_bootstrap->c_str());
}

std::string StreamJson(const StreamListing& s) {
  if (!s.error.empty()) return absl::StrCat("{\"stream\":", JsonString(s.name), ",\"error\":", JsonString(s.error), "}");
  std::string out = absl::StrCat(
      "{\"stream\":", JsonString(s.name), ",\"frames\":", s.frames, ",\"bytes\":", s.bytes, ",\"epoch\":", s.epoch,
      ",\"start\":", JsonString(pipeline::FormatStreamPosition(s.kind, s.start)),
      ",\"end\":", JsonString(pipeline::FormatStreamPosition(s.kind, s.end)),
      ",\"first_data_time\":", JsonString(pipeline::FormatUnixMicros(s.first_ts)),
      ",\"last_data_time\":", JsonString(pipeline::FormatUnixMicros(s.last_ts)),
      ",\"first_arrival\":", JsonString(pipeline::FormatUnixMicros(s.first_arrival)),
      ",\"last_arrival\":", JsonString(pipeline::FormatUnixMicros(s.last_arrival)), ",\"files\":[");
  for (size_t i = 0; i < s.files.size(); ++i) absl::StrAppend(&out, i ? "," : "", JsonString(s.files[i]));
  return out + "]}";
}

std::string SourceJson(const SourceListing& s) {
  std::string out = absl::StrCat("{\"name\":", JsonString(s.name), ",\"kind\":", JsonString(s.kind()),
                                 ",\"system_id\":", JsonString(s.Identity("system_id")), ",\"streams\":[");
  for (size_t i = 0; i < s.streams.size(); ++i) absl::StrAppend(&out, i ? "," : "", StreamJson(s.streams[i]));
  out += "]";
  if (s.store == nullptr) return absl::StrCat(out, ",\"snapshots\":[],\"error\":", JsonString(s.store_error), "}");
  out += ",\"snapshots\":[";
  bool first_snap = true;
  for (const auto& m : s.store->snapshots()) {
    absl::StrAppend(&out, first_snap ? "" : ",", "{\"id\":", JsonString(m.id),
                    ",\"kind\":", JsonString(m.Get("kind")), ",\"class\":", JsonString(m.Get("class")),
                    ",\"start_lsn\":", JsonString(m.Get("start_lsn")),
                    ",\"end_lsn\":", JsonString(m.Get("end_lsn")),
                    ",\"epoch\":", JsonString(m.Get("epoch")), ",\"offset\":", JsonString(m.Get("offset")),
                    ",\"replid\":", JsonString(m.Get("replid")),
                    ",\"end_time\":", JsonString(m.Get("end_time")), ",\"bytes\":", m.RawBytes(), "}");
    first_snap = false;
  }
  out += "]";
  if (s.window.ok() && s.window->valid) {
    absl::StrAppend(&out, ",\"restorable\":{\"earliest\":", JsonString(pipeline::FormatUnixMicros(s.window->earliest)),
                    ",\"latest\":", JsonString(pipeline::FormatUnixMicros(s.window->latest)), "}");
  } else if (s.window.ok()) {
    absl::StrAppend(&out, ",\"restorable\":null,\"not_restorable_because\":", JsonString(s.window->why_not));
  }
  return out + "}";
}

std::string ListingJson(const std::string& archive_path, const Listing& l) {
  std::string out = "{\"archive\":" + JsonString(archive_path) + ",\"sources\":[";
  for (size_t i = 0; i < l.sources.size(); ++i) absl::StrAppend(&out, i ? "," : "", SourceJson(l.sources[i]));
  out += "],\"marks\":[";
  for (size_t i = 0; i < l.marks.size(); ++i) {
    const backup::Mark& m = l.marks[i];
    absl::StrAppend(&out, i ? "," : "", "{\"name\":", JsonString(m.name),
                    ",\"time\":", JsonString(pipeline::FormatUnixMicros(m.time)), ",\"points\":[");
    for (size_t j = 0; j < m.points.size(); ++j) {
      const backup::MarkPoint& p = m.points[j];
      const std::string at = p.kind == "postgres" ? p.lsn.ToString() : absl::StrCat(p.offset);
      absl::StrAppend(&out, j ? "," : "", "{\"source\":", JsonString(p.source), ",\"at\":", JsonString(at), "}");
    }
    out += "]}";
  }
  out += "]";
  if (l.kafka_bootstrap) absl::StrAppend(&out, ",\"kafka\":{\"bootstrap\":", JsonString(*l.kafka_bootstrap), "}");
  if (!l.marks_error.empty()) absl::StrAppend(&out, ",\"marks_error\":", JsonString(l.marks_error));
  return out + "}";
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
  const Listing listing = ListArchive(**archive, archive_path);
  if (json) {
    std::printf("%s\n", ListingJson(archive_path, listing).c_str());
  } else {
    PrintText(listing);
  }
  return listing.ok ? 0 : 1;
}

}  // namespace ferry::tools
