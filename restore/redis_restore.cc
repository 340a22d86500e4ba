// Redis restore: planning the epoch, offset and snapshot of a target, and writing the
// multi-part AOF directory (base RDB, incremental commands, manifest).
#include "restore/redis_restore.h"

#include <strings.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "backup/redis_snapshot.h"
#include "client/redis/command_parser.h"
#include "pipeline/check.h"
#include "restore/pg_restore.h"
#include "storage/archive.h"
#include "storage/durable_file.h"

namespace ferry::restore {
namespace {

using storage::FrameLocation;
using storage::SnapshotManifest;

struct RdbSnapshot {
  const SnapshotManifest* manifest;
  uint32_t epoch = 0;
  uint64_t offset = 0;
  pipeline::UnixMicros end_time = 0;
};

std::vector<RdbSnapshot> RdbSnapshots(const storage::SnapshotStore& store) {
  std::vector<RdbSnapshot> out;
  for (const SnapshotManifest& m : store.snapshots()) {
    if (m.Get("kind") != backup::kRedisRdbKind) continue;
    RdbSnapshot s{&m};
    auto end = pipeline::ParseRfc3339(m.Get("end_time"));
    if (!absl::SimpleAtoi(m.Get("epoch"), &s.epoch) || !absl::SimpleAtoi(m.Get("offset"), &s.offset) || !end.ok()) {
      continue;  // not one of ours to restore from; ferry verify reports damaged manifests
    }
    s.end_time = *end;
    out.push_back(s);
  }
  return out;  // oldest first, as the store lists them
}

// Where epoch `e` of the stream ends: its last frame, or (no command yet) its snapshot.
uint64_t EpochEnd(const std::vector<FrameLocation>& frames, const std::vector<RdbSnapshot>& snaps, uint32_t e,
                  bool* known) {
  *known = false;
  uint64_t end = 0;
  for (const RdbSnapshot& s : snaps) {
    if (s.epoch == e) {
      end = std::max(end, s.offset);
      *known = true;
    }
  }
  for (const FrameLocation& f : frames) {
    if (f.header.epoch == e) {
      end = std::max(end, f.header.end_pos);
      *known = true;
    }
  }
  return end;
}

// A cutter that writes commands into the incremental AOF and remembers where the open
// transaction (if any) began, so the file can end on a transaction boundary.
class AofWriter {
 public:
  explicit AofWriter(std::FILE* f) : f_(f) {}
  absl::Status Add(const client::redis::Command& c, uint64_t start_pos) {
    if (client::redis::IsReplicationChatter(c)) return absl::OkStatus();
    const char* name = c.argv[0].c_str();
    if (strcasecmp(name, "MULTI") == 0) {
      tx_start_bytes_ = bytes_;
      tx_start_pos_ = start_pos;
      in_tx_ = true;
    } else if (strcasecmp(name, "EXEC") == 0 || strcasecmp(name, "DISCARD") == 0) {
      in_tx_ = false;
    }
    if (std::fwrite(c.raw.data(), 1, c.raw.size(), f_) != c.raw.size()) {
      return storage::ErrnoStatus("write", "the incremental AOF", errno);
    }
    bytes_ += c.raw.size();
    ++commands_;
    return absl::OkStatus();
  }
  bool in_tx() const { return in_tx_; }
  uint64_t tx_start_bytes() const { return tx_start_bytes_; }
  uint64_t tx_start_pos() const { return tx_start_pos_; }
  uint64_t commands() const { return commands_; }

 private:
  std::FILE* f_;
  uint64_t bytes_ = 0;
  uint64_t commands_ = 0;
  bool in_tx_ = false;
  uint64_t tx_start_bytes_ = 0;
  uint64_t tx_start_pos_ = 0;
};

// The database the stream had selected at `offset` of `epoch` (0 when no SELECT came before
// it). The commands after a scheduled snapshot's offset run in that database: Redis emits a
// SELECT only when the database changes.
absl::StatusOr<int> SelectedDbAt(const storage::StreamLog& log, uint32_t epoch, uint64_t offset) {
  int db = 0;
  client::redis::CommandParser parser;
  client::redis::Command cmd;
  std::string scratch;
  for (const FrameLocation& f : log.frames()) {
    if (f.header.epoch != epoch || f.header.start_pos >= offset) continue;
    FERRY_ASSIGN_OR_RETURN(auto records, log.ReadRecords(f, &scratch));
    for (const pipeline::RecordView& rec : records) {
      if (rec.end_pos > offset) break;
      parser.Feed(rec.payload);
      FERRY_ASSIGN_OR_RETURN(bool got, parser.Next(&cmd));
      if (got && cmd.argc == 2 && strcasecmp(cmd.argv[0].c_str(), "SELECT") == 0) {
        (void)absl::SimpleAtoi(cmd.argv[1], &db);
      }
    }
  }
  return db;
}


// What the archive holds of a Redis source, for PlanRedisRestore's steps.
struct RedisHistory {
  const std::vector<FrameLocation>& frames;
  const std::vector<RdbSnapshot>& snaps;  // oldest first, at least one
  uint32_t newest_epoch = 0;
};

absl::Status PlanOffset(const RedisHistory& h, const RedisTarget& target, RedisRestorePlan* plan) {
  plan->description = absl::StrCat("offset ", target.offset);
  bool known = false;
  // The newest epoch that holds the offset (epochs after a full resync may reuse offsets).
  for (uint32_t e = h.newest_epoch; e >= 1 && plan->epoch == 0; --e) {
    const uint64_t end = EpochEnd(h.frames, h.snaps, e, &known);
    if (!known || target.offset > end) continue;
    for (const RdbSnapshot& s : h.snaps) {
      if (s.epoch == e && s.offset <= target.offset) plan->epoch = e;
    }
  }
  if (plan->epoch == 0) {
    return absl::OutOfRangeError(absl::StrCat("offset ", target.offset,
                                              " is in no archived epoch after a snapshot (newest epoch ",
                                              h.newest_epoch, " ends at ",
                                              EpochEnd(h.frames, h.snaps, h.newest_epoch, &known), ")"));
  }
  plan->to = target.offset;
  return absl::OkStatus();
}

absl::Status PlanTime(const RedisHistory& h, const RedisTarget& target, RedisRestorePlan* plan) {
  plan->description = absl::StrCat("time ", pipeline::FormatUnixMicros(target.time));
  const FrameLocation* last_in = nullptr;
  for (const FrameLocation& f : h.frames) {
    if (f.header.arrival_us <= target.time) last_in = &f;
  }
  const RdbSnapshot* snap_in = nullptr;
  for (const RdbSnapshot& s : h.snaps) {
    if (s.end_time <= target.time) snap_in = &s;
  }
  if (snap_in == nullptr) {
    return absl::OutOfRangeError(absl::StrCat(plan->description, " is before the oldest Redis snapshot (",
                                              h.snaps.front().manifest->id, ", complete at ",
                                              pipeline::FormatUnixMicros(h.snaps.front().end_time), ")"));
  }
  // A time after the last archived frame restores everything archived: the stream had
  // nothing more by then as far as ferry knows (an idle primary still sends a PING into
  // it every 10 s, so the archive's last frame is never far behind a connected ferry).
  const pipeline::UnixMicros last_arrival =
      h.frames.empty() ? h.snaps.back().end_time : h.frames.back().header.arrival_us;
  if (target.time > last_arrival) {
    absl::StrAppend(&plan->description, " (after the last archived command, ", pipeline::FormatUnixMicros(last_arrival),
                    ")");
  }
  if (last_in == nullptr || snap_in->epoch > last_in->header.epoch) {
    plan->epoch = snap_in->epoch;
    plan->to = snap_in->offset;
  } else {
    plan->epoch = last_in->header.epoch;
    plan->to = last_in->header.end_pos;
  }
  return absl::OkStatus();
}

// The newest snapshot of the plan's epoch at or before its target.
absl::Status ChooseSnapshot(const std::vector<RdbSnapshot>& snaps, RedisRestorePlan* plan) {
  for (const RdbSnapshot& s : snaps) {
    if (s.epoch == plan->epoch && s.offset <= plan->to) {
      plan->snapshot = s.manifest;
      plan->from = s.offset;
    }
  }
  if (plan->snapshot == nullptr) {
    return absl::OutOfRangeError(absl::StrCat(plan->description, " (epoch ", plan->epoch, ", offset ", plan->to,
                                              ") is before the oldest snapshot of that epoch"));
  }
  return absl::OkStatus();
}

// Every byte from the snapshot to the target must be in the archive.
absl::Status CheckCovered(const std::vector<FrameLocation>& frames, const RedisRestorePlan& plan) {
  uint64_t covered = plan.from;
  for (const FrameLocation& f : frames) {
    if (f.header.epoch != plan.epoch || f.header.end_pos <= covered) continue;
    if (covered >= plan.to) break;
    if (f.header.start_pos > covered) break;
    covered = f.header.end_pos;
  }
  if (covered < plan.to) {
    return absl::DataLossError(absl::StrCat("the archive has no commands of epoch ", plan.epoch, " from offset ",
                                            covered, " to ", plan.to, "; run ferry verify"));
  }
  return absl::OkStatus();
}

// What writing the incremental AOF got to.
struct Replayed {
  uint64_t reached = 0;  // the offset the restore reaches
  uint64_t commands = 0;
};

// The snapshot's RDB file; kDataLoss when it has none.
absl::StatusOr<const storage::SnapshotEntry*> RdbEntry(const SnapshotManifest& snap) {
  const storage::SnapshotEntry* rdb = nullptr;
  for (const auto& e : snap.entries) {
    if (e.path == backup::kRedisRdbFile) rdb = &e;
  }
  if (rdb == nullptr) return absl::DataLossError(absl::StrCat("snapshot ", snap.id, " has no ", backup::kRedisRdbFile));
  return rdb;
}

// The snapshot's RDB file, written as the AOF's base.
absl::Status WriteBase(const storage::SnapshotStore& store, const storage::SnapshotEntry& rdb, const std::string& dir,
                       const std::string& base_name) {
  std::FILE* base = std::fopen((dir + "/" + base_name).c_str(), "wb");
  if (base == nullptr) return storage::ErrnoStatus("create", absl::StrCat(dir, "/", base_name), errno);
  absl::Status w = store.ReadFile(rdb, [&](absl::string_view bytes) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), base) == bytes.size()) return absl::OkStatus();
    return storage::ErrnoStatus("write", base_name, errno);
  });
  if (std::fclose(base) != 0 && w.ok()) w = storage::ErrnoStatus("write", base_name, errno);
  return w;
}

// The archived commands of the plan's epoch after its snapshot, up to its target, into `aof`;
// *reached: the end of the last one written.
absl::Status AppendCommands(const storage::StreamLog& log, const RedisRestorePlan& plan, AofWriter* aof,
                            uint64_t* reached) {
  client::redis::CommandParser parser;
  client::redis::Command cmd;
  std::string scratch;
  for (const FrameLocation& f : log.frames()) {
    if (f.header.epoch != plan.epoch || f.header.end_pos <= plan.from) continue;
    if (f.header.start_pos >= plan.to) break;
    FERRY_ASSIGN_OR_RETURN(auto records, log.ReadRecords(f, &scratch));
    for (const pipeline::RecordView& rec : records) {
      if (rec.end_pos <= plan.from) continue;
      if (rec.end_pos > plan.to) break;
      parser.Feed(rec.payload);
      auto got = parser.Next(&cmd);
      if (!got.ok() || !*got || parser.pending() != 0) {
        return absl::DataLossError(absl::StrCat("archived record ending at offset ", rec.end_pos,
                                                " is not one whole command; run ferry verify"));
      }
      FERRY_RETURN_IF_ERROR(aof->Add(cmd, rec.end_pos - rec.payload.size()));
      *reached = rec.end_pos;
    }
  }
  return absl::OkStatus();
}

// The incremental AOF: the database selected at the snapshot, then the commands to the
// target, cut back to a transaction boundary.
absl::Status WriteIncrement(const storage::StreamLog& log, const RedisRestorePlan& plan, const std::string& incr_path,
                            Replayed* out) {
  FERRY_ASSIGN_OR_RETURN(const int db, SelectedDbAt(log, plan.epoch, plan.from));
  std::FILE* incr = std::fopen(incr_path.c_str(), "wb");
  if (incr == nullptr) return storage::ErrnoStatus("create", incr_path, errno);
  AofWriter aof(incr);
  if (db != 0) {
    const std::string select = absl::StrCat("*2\r\n$6\r\nSELECT\r\n$", absl::StrCat(db).size(), "\r\n", db, "\r\n");
    std::fwrite(select.data(), 1, select.size(), incr);
  }
  absl::Status r = AppendCommands(log, plan, &aof, &out->reached);
  if (r.ok() && aof.in_tx()) {
    // Never half a transaction: cut back to just before its MULTI.
    out->reached = aof.tx_start_pos();
    if (std::fflush(incr) != 0 || ftruncate(fileno(incr), static_cast<off_t>(aof.tx_start_bytes())) != 0) {
      r = storage::ErrnoStatus("truncate", incr_path, errno);
    }
  }
  out->commands = aof.commands();
  if (std::fclose(incr) != 0 && r.ok()) r = storage::ErrnoStatus("write", incr_path, errno);
  return r;
}

absl::Status WriteAofManifest(const std::string& dir, const std::string& base_name, const std::string& incr_name) {
  std::FILE* manifest = std::fopen(absl::StrCat(dir, "/", kAofFileName, ".manifest").c_str(), "wb");
  if (manifest == nullptr) return storage::ErrnoStatus("create the AOF manifest in", dir, errno);
  std::fprintf(manifest, "file %s seq 1 type b\nfile %s seq 1 type i\n", base_name.c_str(), incr_name.c_str());
  if (std::fclose(manifest) != 0) return storage::ErrnoStatus("write the AOF manifest in", dir, errno);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RedisRestorePlan> PlanRedisRestore(const storage::StreamLog& log,
                                                  const storage::SnapshotStore& snapshots,
                                                  const RedisTarget& target) {
  const std::vector<RdbSnapshot> snaps = RdbSnapshots(snapshots);
  if (snaps.empty()) {
    return absl::OutOfRangeError("the archive has no Redis snapshot yet: nothing to restore from");
  }
  const std::vector<FrameLocation>& frames = log.frames();
  uint32_t newest_epoch = snaps.back().epoch;
  if (!frames.empty()) newest_epoch = std::max(newest_epoch, frames.back().header.epoch);
  const RedisHistory history{frames, snaps, newest_epoch};

  RedisRestorePlan plan;
  switch (target.kind) {
    case RedisTarget::Kind::kLatest: {
      bool known = false;
      plan.epoch = newest_epoch;
      plan.to = EpochEnd(frames, snaps, plan.epoch, &known);
      plan.description = "latest";
      break;
    }
    case RedisTarget::Kind::kOffset:
      FERRY_RETURN_IF_ERROR(PlanOffset(history, target, &plan));
      break;
    case RedisTarget::Kind::kTime:
      FERRY_RETURN_IF_ERROR(PlanTime(history, target, &plan));
      break;
  }
  FERRY_RETURN_IF_ERROR(ChooseSnapshot(snaps, &plan));
  FERRY_RETURN_IF_ERROR(CheckCovered(frames, plan));
  return plan;
}

RestoreWindow RedisRestorableWindow(const storage::StreamLog& log, const storage::SnapshotStore& snapshots) {
  RestoreWindow w;
  const std::vector<RdbSnapshot> snaps = RdbSnapshots(snapshots);
  if (snaps.empty()) {
    w.why_not = "no Redis snapshot yet";
    return w;
  }
  w.valid = true;
  w.earliest = snaps.front().end_time;
  w.latest = std::max(snaps.back().end_time, log.empty() ? 0 : log.frames().back().header.arrival_us);
  return w;
}

absl::StatusOr<std::string> RestoreRedisTo(const std::string& archive_path, const std::string& source,
                                           const RedisTarget& target, const std::string& to) {
  FERRY_RETURN_IF_ERROR(CheckEmptyTarget(to));
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, archive->Stream(source, pipeline::StreamKind::kRedisCommands));
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive->SnapshotDir(source), false));
  FERRY_ASSIGN_OR_RETURN(RedisRestorePlan plan, PlanRedisRestore(*log, *store, target));
  const SnapshotManifest& snap = *plan.snapshot;
  FERRY_ASSIGN_OR_RETURN(const storage::SnapshotEntry* rdb, RdbEntry(snap));

  const std::string dir = absl::StrCat(to, "/", kAofDirName);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return storage::ErrnoStatus("create", dir, ec.value());
  const std::string base_name = absl::StrCat(kAofFileName, ".1.base.rdb");
  const std::string incr_name = absl::StrCat(kAofFileName, ".1.incr.aof");
  Replayed replayed{plan.from, 0};
  absl::Status st = WriteBase(*store, *rdb, dir, base_name);
  if (st.ok()) st = WriteIncrement(*log, plan, dir + "/" + incr_name, &replayed);
  if (st.ok()) st = WriteAofManifest(dir, base_name, incr_name);
  if (!st.ok()) {
    std::filesystem::remove_all(dir, ec);  // nothing half-written that could pass for a restore
    return st;
  }
  return absl::StrCat("restored Redis source \"", source, "\" to ", plan.description, ": offset ", replayed.reached,
                      " (epoch ", plan.epoch, ", replid ", snap.Get("replid"), ") from snapshot ", snap.id,
                      " at offset ", plan.from, " + ", replayed.commands, " commands, in ", dir);
}

}  // namespace ferry::restore
