// Retention: which snapshots expire, where the kept window's stream starts, and the
// deletion of stream segments and packs nothing kept needs.
#include "backup/retention.h"

#include <unistd.h>

#include <cerrno>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "backup/redis_snapshot.h"
#include "config/config.h"
#include "pipeline/check.h"
#include "storage/segment_format.h"
#include "storage/snapshot_store.h"

namespace ferry::backup {

RetentionPolicy PolicyOf(const config::Config& config) {
  RetentionPolicy p;
  p.full = config.retention_full;
  p.incremental = config.retention_incremental;
  p.wal = config.retention_wal;
  p.redis_snapshots = config.retention_redis_snapshots;
  return p;
}

namespace {

// One ApplyRetention call: its inputs and what it removes.
struct RetentionRun {
  const RetentionPolicy& policy;
  pipeline::UnixMicros now;
  bool dry_run;
  bool redis = false;  // the source's snapshots are Redis RDBs (else PostgreSQL base backups)
  RetentionResult result;
};

// Where the oldest kept snapshot's stream starts: (timeline, start LSN) or (epoch, offset).
struct StreamCut {
  uint32_t epoch = 0;
  uint64_t pos = 0;
};

// The source's restorable snapshots, oldest first. A source's snapshots are PostgreSQL base
// backups or Redis RDBs, never both; *redis says which.
std::vector<const storage::SnapshotManifest*> FindBackups(const storage::SnapshotStore& store, bool* redis) {
  std::vector<const storage::SnapshotManifest*> backups;
  for (const auto& m : store.snapshots()) {
    if (m.Get("kind") == "pg-base-backup") backups.push_back(&m);
    if (m.Get("kind") == kRedisRdbKind) {
      backups.push_back(&m);
      *redis = true;
    }
  }
  return backups;
}

// Adds to *expired the snapshots older than their limit, but never the newest; returns the
// oldest snapshot kept.
const storage::SnapshotManifest* ExpireSnapshots(const std::vector<const storage::SnapshotManifest*>& backups,
                                                 const RetentionRun& run, std::vector<std::string>* expired) {
  const storage::SnapshotManifest* oldest_kept = backups.back();
  for (size_t i = 0; i + 1 < backups.size(); ++i) {
    const auto& m = *backups[i];
    auto end = pipeline::ParseRfc3339(m.Get("end_time"));
    const absl::Duration limit = run.redis                  ? run.policy.redis_snapshots
                                 : m.Get("class") == "full" ? run.policy.full
                                                            : run.policy.incremental;
    if (end.ok() && absl::Microseconds(run.now - *end) > limit) {
      expired->push_back(m.id);
    } else if (oldest_kept == backups.back()) {
      oldest_kept = &m;
    }
  }
  return oldest_kept;
}

absl::StatusOr<StreamCut> CutOf(const storage::SnapshotManifest& oldest_kept, bool redis) {
  StreamCut cut;
  if (!absl::SimpleAtoi(oldest_kept.Get(redis ? "epoch" : "start_tli"), &cut.epoch)) cut.epoch = 0;
  if (redis) {
    if (!absl::SimpleAtoi(oldest_kept.Get("offset"), &cut.pos)) {
      return absl::DataLossError(absl::StrCat("snapshot ", oldest_kept.id, " has no offset"));
    }
  } else {
    auto lsn = pipeline::Lsn::Parse(oldest_kept.Get("start_lsn"));
    if (!lsn.ok()) return absl::DataLossError(absl::StrCat("snapshot ", oldest_kept.id, " has no start_lsn"));
    cut.pos = lsn->value();
  }
  return cut;
}

// What a stream segment holds, for deciding whether it may go.
struct SegmentSpan {
  uint64_t max_end = 0;  // in max_epoch
  uint32_t max_epoch = 0;
  pipeline::UnixMicros max_arrival = 0;
};

std::map<uint64_t, SegmentSpan> SegmentSpans(const storage::StreamLog& log, bool redis) {
  std::map<uint64_t, SegmentSpan> spans;
  for (const auto& f : log.frames()) {
    SegmentSpan& s = spans[f.segment_seq];
    if (redis && f.header.epoch > s.max_epoch) s.max_end = 0;
    if (f.header.epoch >= s.max_epoch || !redis) s.max_end = std::max(s.max_end, f.header.end_pos);
    s.max_epoch = std::max(s.max_epoch, f.header.epoch);
    s.max_arrival = std::max(s.max_arrival, f.header.arrival_us);
  }
  return spans;
}

// Deletes the stream's segments (and their indexes) that the kept window does not need and
// that are older than policy.wal.
absl::Status DeleteOldSegments(const storage::StreamLog& log, const StreamCut& cut, RetentionRun* run) {
  const std::map<uint64_t, SegmentSpan> spans = SegmentSpans(log, run->redis);
  const uint64_t active = spans.rbegin()->first;
  bool deleted = false;
  for (const auto& [seq, s] : spans) {
    // Segments are in stream order: the first one the kept window needs ends the sweep.
    const bool needed = run->redis ? s.max_epoch > cut.epoch || (s.max_epoch == cut.epoch && s.max_end > cut.pos)
                                   : s.max_end > cut.pos || s.max_epoch > cut.epoch;
    if (seq == active || needed || absl::Microseconds(run->now - s.max_arrival) <= run->policy.wal) break;
    const std::string seg = log.SegmentPath(seq);
    const std::string idx = absl::StrCat(log.dir(), "/", storage::IndexFileName(seq));
    if (!run->dry_run) {
      // The segment first: an index without its segment is ignored on open.
      if (unlink(seg.c_str()) != 0 && errno != ENOENT) return storage::ErrnoStatus("remove", seg, errno);
      if (unlink(idx.c_str()) != 0 && errno != ENOENT) return storage::ErrnoStatus("remove", idx, errno);
      deleted = true;
    }
    run->result.files.push_back(seg);
  }
  if (deleted) FERRY_RETURN_IF_ERROR(storage::SyncDirectory(log.dir()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RetentionResult> ApplyRetention(storage::Archive& archive, const std::string& source,
                                               const RetentionPolicy& policy,
                                               pipeline::UnixMicros now, bool dry_run) {
  RetentionRun run{policy, now, dry_run};
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive.SnapshotDir(source), false));
  const std::vector<const storage::SnapshotManifest*> backups = FindBackups(*store, &run.redis);
  if (backups.empty()) return run.result;  // nothing restorable yet: keep every stream byte

  // 1. Snapshots. The newest always stays.
  std::vector<std::string> expired;
  const storage::SnapshotManifest* oldest_kept = ExpireSnapshots(backups, run, &expired);
  FERRY_ASSIGN_OR_RETURN(const StreamCut cut, CutOf(*oldest_kept, run.redis));
  for (const std::string& id : expired) {
    if (!dry_run) FERRY_RETURN_IF_ERROR(store->Remove(id));
    run.result.snapshots.push_back(id);
  }

  // 2. Stream segments wholly before the oldest kept snapshot's start and older than
  // policy.wal. LSNs are comparable across PostgreSQL timelines; Redis offsets restart with
  // each epoch (a full resync), so an older epoch is wholly before the cut whatever its offsets.
  auto wal = archive.Stream(source, run.redis ? pipeline::StreamKind::kRedisCommands : pipeline::StreamKind::kPgWal);
  if (!wal.ok() && !absl::IsNotFound(wal.status())) return wal.status();
  if (wal.ok() && !(*wal)->empty()) FERRY_RETURN_IF_ERROR(DeleteOldSegments(**wal, cut, &run));

  // 3. Packs that no kept snapshot references (a dry run still counts the expired ones).
  FERRY_ASSIGN_OR_RETURN(std::vector<std::string> packs, store->CollectGarbage(dry_run));
  run.result.files.insert(run.result.files.end(), packs.begin(), packs.end());
  return run.result;
}

}  // namespace ferry::backup
