// The WAL check of a PostgreSQL restore: ScanWal, which decodes the archived WAL and checks
// every frame and record, and what is built on it (CheckRestoreWal, FindCommit).
#include "restore/wal_check.h"

#include <deque>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "restore/pg_restore.h"

namespace ferry::restore {

using pipeline::Lsn;
using storage::FrameLocation;

namespace {

// An LSN of a backup's manifest (start_lsn, end_lsn); invalid when absent or malformed.
Lsn BackupLsn(const storage::SnapshotManifest& m, const std::string& key) {
  return Lsn::Parse(m.Get(key)).value_or(Lsn());
}

}  // namespace

absl::Status ScanWal(const storage::StreamLog& wal, int64_t from, int64_t to, Lsn start, uint64_t segment_bytes,
                     uint64_t system_id, const std::function<bool(const ingest::pg::CommitInfo&)>& on_commit,
                     WalScan* out) {
  ingest::pg::WalDecoder decoder(segment_bytes, system_id);
  decoder.Reset(start, true);
  std::vector<ingest::pg::CommitInfo> commits;
  // Commits that may still be the hint: the newest is kept, and older ones only while they
  // could be the last one before a damaged segment found later.
  std::deque<ingest::pg::CommitInfo> recent;
  std::string scratch;
  uint32_t epoch = wal.frames()[from].header.epoch;
  auto damage = [&](const FrameLocation& loc, const absl::Status& st) {
    out->damaged = &loc;
    const uint64_t seg_start = loc.header.start_pos / segment_bytes * segment_bytes;
    for (auto it = recent.rbegin(); it != recent.rend(); ++it) {
      if (it->end_lsn.value() + kReadAheadMargin <= seg_start) {
        out->restorable = *it;
        break;
      }
    }
    return absl::DataLossError(st.message());
  };
  for (int64_t i = from; i <= to; ++i) {
    const FrameLocation& loc = wal.frames()[i];
    if (loc.header.epoch != epoch) {  // a timeline switch: the new timeline starts at a record
      epoch = loc.header.epoch;
      decoder.Reset(Lsn(loc.header.start_pos), true);
    }
    auto records = wal.ReadRecords(loc, &scratch);
    if (!records.ok()) return damage(loc, records.status());
    uint64_t pos = loc.header.start_pos;
    for (const auto& r : *records) {
      const uint64_t begin = pos;
      pos = r.end_pos;
      if (r.end_pos <= decoder.position().value()) continue;
      if (begin > decoder.position().value()) {
        return damage(loc, absl::DataLossError(absl::StrCat("the archive has no WAL at ",
                                                            decoder.position().ToString())));
      }
      commits.clear();
      absl::Status st = decoder.Feed(r.payload.substr(decoder.position().value() - begin), &commits);
      if (!st.ok()) {
        return damage(loc, absl::DataLossError(absl::StrCat(wal.SegmentPath(loc.segment_seq), " at offset ",
                                                            loc.offset, ": ", st.message())));
      }
      for (const auto& c : commits) {
        if (on_commit && on_commit(c)) return absl::OkStatus();
        recent.push_back(c);
      }
      // A later damaged segment starts at most a segment before the decoder's position, so
      // a commit that far behind with a newer one also that far behind can never be the hint.
      while (recent.size() > 1 &&
             recent[1].end_lsn.value() + segment_bytes + kReadAheadMargin <= decoder.position().value()) {
        recent.pop_front();
      }
    }
    out->last_record_start = decoder.last_record_start();
    out->last_record_end = decoder.last_record_end();
  }
  return absl::OkStatus();
}

absl::StatusOr<ingest::pg::CommitInfo> FindCommit(const storage::StreamLog& wal, int64_t from,
                                                  Lsn start, uint32_t xid, uint64_t segment_bytes,
                                                  uint64_t system_id) {
  absl::optional<ingest::pg::CommitInfo> found;
  WalScan scan;
  FERRY_RETURN_IF_ERROR(ScanWal(wal, from, static_cast<int64_t>(wal.frames().size()) - 1, start, segment_bytes,
                                system_id,
                                [&](const ingest::pg::CommitInfo& c) {
                                  if (c.xid == xid) found = c;
                                  return found.has_value();
                                },
                                &scan));
  if (found) return *found;
  return absl::NotFoundError(absl::StrCat("transaction ", xid, " has no commit record in the archive "
                                          "(still running, aborted, or older than every backup)"));
}

absl::StatusOr<WalCheck> CheckRestoreWal(const storage::StreamLog& wal, const PgRestorePlan& plan,
                                         uint64_t segment_bytes, uint64_t system_id,
                                         const std::atomic<bool>* cancel) {
  WalScan scan;
  absl::Status st =
      ScanWal(wal, plan.first_frame, plan.last_frame, BackupLsn(*plan.snapshot, "start_lsn"), segment_bytes, system_id,
              [&](const ingest::pg::CommitInfo&) { return cancel != nullptr && cancel->load(); }, &scan);
  if (st.ok()) return WalCheck{scan.last_record_start, scan.last_record_end};
  const Lsn consistent = BackupLsn(*plan.snapshot, "end_lsn");
  std::string instead;
  if (scan.restorable && scan.restorable->end_lsn >= consistent) {
    instead = absl::StrCat("the latest point before it that this archive can restore is --xid ", scan.restorable->xid,
                           " (committed ", pipeline::FormatUnixMicros(scan.restorable->commit_time), ", ends at ",
                           scan.restorable->end_lsn.ToString(), ")");
  } else {
    instead = absl::StrCat("no point from backup ", plan.snapshot->id, " on can be restored before it");
  }
  return absl::DataLossError(absl::StrCat("WAL this restore needs is damaged: ", st.message(), "; ", instead,
                                          ", or restore from a backup taken after it; ferry verify lists all damage"));
}

}  // namespace ferry::restore
