#include "tools/backup/retention.h"

#include <unistd.h>

#include <cerrno>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "storage/segment_format.h"
#include "storage/snapshot_store.h"
#include "tools/backup/redis_snapshot.h"
#include "tools/service/config.h"

namespace ferry::tools {

RetentionPolicy PolicyOf(const Config& config) {
  RetentionPolicy p;
  p.full = config.retention_full;
  p.incremental = config.retention_incremental;
  p.wal = config.retention_wal;
  p.redis_snapshots = config.retention_redis_snapshots;
  return p;
}

absl::StatusOr<RetentionResult> ApplyRetention(storage::Archive& archive, const std::string& source,
                                               const RetentionPolicy& policy,
                                               pipeline::UnixMicros now, bool dry_run) {
  RetentionResult result;
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive.SnapshotDir(source), false));
  // A source's snapshots are PostgreSQL base backups or Redis RDBs, never both.
  std::vector<const storage::SnapshotManifest*> backups;
  bool redis = false;
  for (const auto& m : store->snapshots()) {
    if (m.Get("kind") == "pg-base-backup") backups.push_back(&m);
    if (m.Get("kind") == kRedisRdbKind) {
      backups.push_back(&m);
      redis = true;
    }
  }
  if (backups.empty()) return result;  // nothing restorable yet: keep every stream byte

  // 1. Snapshots. The newest always stays.
  const storage::SnapshotManifest* oldest_kept = backups.back();
  std::vector<std::string> expired;
  for (size_t i = 0; i + 1 < backups.size(); ++i) {
    const auto& m = *backups[i];
    auto end = pipeline::ParseRfc3339(m.Get("end_time"));
    const absl::Duration limit = redis ? policy.redis_snapshots
                                 : m.Get("class") == "full" ? policy.full
                                                            : policy.incremental;
    if (end.ok() && absl::Microseconds(now - *end) > limit) {
      expired.push_back(m.id);
    } else if (oldest_kept == backups.back()) {
      oldest_kept = &m;
    }
  }
  // Where the oldest kept snapshot's stream starts: (timeline, start LSN) or (epoch, offset).
  uint64_t cut = 0;
  uint32_t cut_epoch = 0;
  if (!absl::SimpleAtoi(oldest_kept->Get(redis ? "epoch" : "start_tli"), &cut_epoch)) cut_epoch = 0;
  if (redis) {
    if (!absl::SimpleAtoi(oldest_kept->Get("offset"), &cut)) {
      return absl::DataLossError(absl::StrCat("snapshot ", oldest_kept->id, " has no offset"));
    }
  } else {
    auto lsn = pipeline::Lsn::Parse(oldest_kept->Get("start_lsn"));
    if (!lsn.ok()) return absl::DataLossError(absl::StrCat("snapshot ", oldest_kept->id, " has no start_lsn"));
    cut = lsn->value();
  }
  for (const std::string& id : expired) {
    if (!dry_run) FERRY_RETURN_IF_ERROR(store->Remove(id));
    result.snapshots.push_back(id);
  }

  // 2. Stream segments wholly before the oldest kept snapshot's start and older than
  // policy.wal. LSNs are comparable across PostgreSQL timelines; Redis offsets restart with
  // each epoch (a full resync), so an older epoch is wholly before the cut whatever its offsets.
  auto wal = archive.Stream(source, redis ? pipeline::StreamKind::kRedisCommands : pipeline::StreamKind::kPgWal);
  if (wal.ok() && !(*wal)->empty()) {
    struct SegmentSpan {
      uint64_t max_end = 0;  // in max_epoch
      uint32_t max_epoch = 0;
      pipeline::UnixMicros max_arrival = 0;
    };
    std::map<uint64_t, SegmentSpan> spans;
    for (const auto& f : (*wal)->frames()) {
      SegmentSpan& s = spans[f.segment_seq];
      if (redis && f.header.epoch > s.max_epoch) s.max_end = 0;
      if (f.header.epoch >= s.max_epoch || !redis) s.max_end = std::max(s.max_end, f.header.end_pos);
      s.max_epoch = std::max(s.max_epoch, f.header.epoch);
      s.max_arrival = std::max(s.max_arrival, f.header.arrival_us);
    }
    const uint64_t active = spans.rbegin()->first;
    bool deleted = false;
    for (const auto& [seq, s] : spans) {
      // Segments are in stream order: the first one the kept window needs ends the sweep.
      const bool needed = redis ? s.max_epoch > cut_epoch || (s.max_epoch == cut_epoch && s.max_end > cut)
                                : s.max_end > cut || s.max_epoch > cut_epoch;
      if (seq == active || needed ||
          absl::Microseconds(now - s.max_arrival) <= policy.wal) {
        break;
      }
      const std::string seg = (*wal)->SegmentPath(seq);
      const std::string idx = absl::StrCat((*wal)->dir(), "/", storage::IndexFileName(seq));
      if (!dry_run) {
        // The segment first: an index without its segment is ignored on open.
        if (unlink(seg.c_str()) != 0 && errno != ENOENT) return storage::ErrnoStatus("remove", seg, errno);
        if (unlink(idx.c_str()) != 0 && errno != ENOENT) return storage::ErrnoStatus("remove", idx, errno);
        deleted = true;
      }
      result.files.push_back(seg);
    }
    if (deleted) FERRY_RETURN_IF_ERROR(storage::SyncDirectory((*wal)->dir()));
  } else if (!wal.ok() && !absl::IsNotFound(wal.status())) {
    return wal.status();
  }

  // 3. Packs that no kept snapshot references (a dry run still counts the expired ones).
  FERRY_ASSIGN_OR_RETURN(std::vector<std::string> packs, store->CollectGarbage(dry_run));
  result.files.insert(result.files.end(), packs.begin(), packs.end());
  return result;
}

}  // namespace ferry::tools
