#include "tools/backup/retention.h"

#include <unistd.h>

#include <cerrno>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "storage/segment_format.h"
#include "storage/snapshot_store.h"
#include "tools/service/config.h"

namespace ferry::tools {

RetentionPolicy PolicyOf(const Config& config) {
  RetentionPolicy p;
  p.full = config.retention_full;
  p.incremental = config.retention_incremental;
  p.wal = config.retention_wal;
  return p;
}

absl::StatusOr<RetentionResult> ApplyRetention(storage::Archive& archive, const std::string& source,
                                               const RetentionPolicy& policy,
                                               pipeline::UnixMicros now, bool dry_run) {
  RetentionResult result;
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive.SnapshotDir(source), false));
  std::vector<const storage::SnapshotManifest*> backups;
  for (const auto& m : store->snapshots()) {
    if (m.Get("kind") == "pg-base-backup") backups.push_back(&m);
  }
  if (backups.empty()) return result;  // nothing restorable yet: keep every WAL byte

  // 1. Snapshots. The newest always stays.
  const storage::SnapshotManifest* oldest_kept = backups.back();
  std::vector<std::string> expired;
  for (size_t i = 0; i + 1 < backups.size(); ++i) {
    const auto& m = *backups[i];
    auto end = pipeline::ParseRfc3339(m.Get("end_time"));
    const absl::Duration limit = m.Get("class") == "full" ? policy.full : policy.incremental;
    if (end.ok() && absl::Microseconds(now - *end) > limit) {
      expired.push_back(m.id);
    } else if (oldest_kept == backups.back()) {
      oldest_kept = &m;
    }
  }
  auto cut = pipeline::Lsn::Parse(oldest_kept->Get("start_lsn"));
  if (!cut.ok()) return absl::DataLossError(absl::StrCat("snapshot ", oldest_kept->id, " has no start_lsn"));
  uint32_t cut_tli = 0;
  (void)absl::SimpleAtoi(oldest_kept->Get("start_tli"), &cut_tli);
  for (const std::string& id : expired) {
    if (!dry_run) FERRY_RETURN_IF_ERROR(store->Remove(id));
    result.snapshots.push_back(id);
  }

  // 2. WAL segments wholly before the oldest kept snapshot's start and older than policy.wal.
  auto wal = archive.Stream(source, pipeline::StreamKind::kPgWal);
  if (wal.ok() && !(*wal)->empty()) {
    struct SegmentSpan {
      uint64_t max_end = 0;
      uint32_t max_epoch = 0;
      pipeline::UnixMicros max_arrival = 0;
    };
    std::map<uint64_t, SegmentSpan> spans;
    for (const auto& f : (*wal)->frames()) {
      SegmentSpan& s = spans[f.segment_seq];
      s.max_end = std::max(s.max_end, f.header.end_pos);
      s.max_epoch = std::max(s.max_epoch, f.header.epoch);
      s.max_arrival = std::max(s.max_arrival, f.header.arrival_us);
    }
    const uint64_t active = spans.rbegin()->first;
    bool deleted = false;
    for (const auto& [seq, s] : spans) {
      // Segments are in stream order: the first one the kept window needs ends the sweep.
      if (seq == active || s.max_end > cut->value() || s.max_epoch > cut_tli ||
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
