#include "tools/restore/pg_restore.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ingest/pg/wal_decoder.h"
#include "pipeline/check.h"
#include "storage/archive.h"
#include "tools/progress_bar.h"
#include "tools/sandbox/local_postgres.h"

namespace ferry::tools {
namespace {

using pipeline::Lsn;
using storage::FrameLocation;
using storage::SnapshotManifest;

Lsn MetaLsn(const SnapshotManifest& m, const std::string& key) {
  auto lsn = Lsn::Parse(m.Get(key));
  return lsn.ok() ? *lsn : Lsn();
}

uint32_t MetaTli(const SnapshotManifest& m, const std::string& key) {
  uint32_t v = 0;
  return absl::SimpleAtoi(m.Get(key), &v) ? v : 0;
}

pipeline::UnixMicros MetaTime(const SnapshotManifest& m, const std::string& key) {
  auto t = pipeline::ParseRfc3339(m.Get(key));
  return t.ok() ? *t : 0;
}

// PostgreSQL's recovery_target_time wants its own timestamp syntax, not RFC 3339's 'T'/'Z'.
std::string PgTimestamp(pipeline::UnixMicros t) {
  std::string s = pipeline::FormatUnixMicros(t);  // 2026-11-24T10:00:00.123456Z
  for (char& c : s) {
    if (c == 'T') c = ' ';
  }
  if (!s.empty() && s.back() == 'Z') s.replace(s.size() - 1, 1, "+00");
  return s;
}

bool IsPgBackup(const SnapshotManifest& m) { return m.Get("kind") == "pg-base-backup"; }

// Index of the frame holding the backup's first WAL byte, or -1.
int64_t StartFrame(const storage::StreamLog& wal, const SnapshotManifest& m) {
  const FrameLocation* f =
      wal.FindFrame(MetaTli(m, "start_tli"), MetaLsn(m, "start_lsn").value());
  return f == nullptr ? -1 : f - wal.frames().data();
}

// Frames are in (timeline, position) order and positions grow across a timeline switch
// (a new timeline starts at or before the old one's end), so a hole is a frame that starts
// after its predecessor ended.
absl::Status CheckContiguous(const storage::StreamLog& wal, int64_t from, int64_t to) {
  const auto& frames = wal.frames();
  for (int64_t i = from + 1; i <= to; ++i) {
    const auto& prev = frames[i - 1].header;
    const auto& cur = frames[i].header;
    if (cur.start_pos > prev.end_pos) {
      return absl::DataLossError(absl::StrCat(
          "the archive has no WAL from ", Lsn(prev.end_pos).ToString(), " (timeline ", prev.epoch,
          ") to ", Lsn(cur.start_pos).ToString(), " (timeline ", cur.epoch,
          "): recovery cannot replay across that gap; pick a target before it or after a "
          "backup taken after it"));
    }
  }
  return absl::OkStatus();
}

absl::Status StartNotArchived(const SnapshotManifest& m) {
  return absl::DataLossError(absl::StrCat("the WAL at the start of backup ", m.id, " (",
                                          m.Get("start_lsn"), ", timeline ", m.Get("start_tli"),
                                          ") is not in the archive"));
}

// The newest backup whose end is at or before `limit` (an LSN the replay must reach) and
// whose first WAL byte is archived; *skipped names a newer one passed over for lack of it.
const SnapshotManifest* NewestEndingBy(const storage::StreamLog& wal, const storage::SnapshotStore& snapshots,
                                       Lsn limit, std::string* skipped) {
  const SnapshotManifest* best = nullptr;
  const SnapshotManifest* unusable = nullptr;  // the newest whose start is not archived
  for (const auto& m : snapshots.snapshots()) {
    if (!IsPgBackup(m) || MetaLsn(m, "end_lsn") > limit) continue;
    const SnapshotManifest*& slot = StartFrame(wal, m) < 0 ? unusable : best;
    if (slot == nullptr || MetaLsn(m, "end_lsn") >= MetaLsn(*slot, "end_lsn")) slot = &m;
  }
  const bool passed_over =
      unusable != nullptr && (best == nullptr || MetaLsn(*unusable, "end_lsn") > MetaLsn(*best, "end_lsn"));
  *skipped = passed_over ? unusable->id : "";
  return best;
}

absl::Status BeforeOldest(const storage::SnapshotStore& snapshots, absl::string_view what) {
  std::string oldest = "there is no base backup yet: run ferry backup";
  for (const auto& m : snapshots.snapshots()) {
    if (IsPgBackup(m)) {
      oldest = absl::StrCat("the oldest backup (", m.id, ") ends at ", m.Get("end_time"), ", ",
                            m.Get("end_lsn"));
      break;
    }
  }
  return absl::OutOfRangeError(
      absl::StrCat("target ", what, " is before the restorable window: ", oldest));
}

// Recovery reads ahead of the record it replays (recovery_prefetch decodes up to
// wal_decode_buffer_size, 512 kB by default, ahead), and wal-fetch serves whole segments: a
// point recovery can stop at before a damaged segment leaves this much WAL before it.
constexpr uint64_t kReadAheadMargin = 1 << 20;

// One pass over the WAL of frames [from, to], decoding from `start` (a record boundary in frame
// `from`): every frame read and checked (header and payload checksums; sealed frames
// authenticated) and every record's CRC-32C checked by PostgreSQL's rules. on_commit sees each
// commit in order and returns true to stop the scan there.
struct WalScan {
  pipeline::Lsn last_record_start;  // of the last complete record scanned
  pipeline::Lsn last_record_end;
  const FrameLocation* damaged = nullptr;  // set with the kDataLoss returned
  // On damage: the last commit that ends kReadAheadMargin or more before the damaged frame's
  // WAL segment, which recovery can reach without reading that segment.
  absl::optional<ingest::pg::CommitInfo> restorable;
};

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

// Decodes the WAL from frame `from` (starting at `start`, a record boundary) and returns the
// commit of `xid`, kNotFound if the archive has none.
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

// The source's WAL segment size and system id, from its identity in the archive.
absl::Status WalFacts(const storage::Archive& archive, const std::string& source, uint64_t* segment_bytes,
                      uint64_t* system_id) {
  FERRY_ASSIGN_OR_RETURN(storage::SourceIdentity identity, archive.GetIdentity(source));
  if (!absl::SimpleAtoi(identity["wal_segment_size"], segment_bytes) ||
      !absl::SimpleAtoi(identity["system_id"], system_id)) {
    return absl::DataLossError(absl::StrCat("source \"", source, "\" has a damaged identity file"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PgRestorePlan> PlanPgRestore(const storage::StreamLog& wal,
                                            const storage::SnapshotStore& snapshots,
                                            const PgTarget& target, uint64_t segment_bytes,
                                            uint64_t system_id) {
  const auto& frames = wal.frames();
  if (frames.empty()) return absl::OutOfRangeError("the archive has no WAL for this source yet");
  PgRestorePlan plan;
  std::string skipped;  // a newer backup passed over: its WAL is not all archived
  int64_t last = static_cast<int64_t>(frames.size()) - 1;  // the frame replay must reach
  const Lsn archive_end(frames.back().header.end_pos);
  switch (target.kind) {
    case PgTarget::Kind::kLatest: {
      // The newest backup whose WAL is all archived: a newer one whose end never reached the
      // archive (ferry run stopped during it) must not block the newest restore there is.
      const SnapshotManifest* newest = nullptr;
      for (const auto& m : snapshots.snapshots()) {
        if (!IsPgBackup(m)) continue;
        newest = &m;
        if (MetaLsn(m, "end_lsn") <= archive_end && StartFrame(wal, m) >= 0) {
          plan.snapshot = &m;
          skipped.clear();
        } else {
          skipped = m.id;
        }
      }
      if (newest == nullptr) return BeforeOldest(snapshots, "latest");
      if (plan.snapshot == nullptr) {
        return absl::OutOfRangeError(absl::StrCat(
            "no backup has all its WAL archived: backup ", newest->id, " ends at ", newest->Get("end_lsn"),
            " but the archive's WAL ends at ", archive_end.ToString(), ": wait until ferry run has archived it"));
      }
      plan.description = "latest";
      plan.replay_to = archive_end;
      break;
    }
    case PgTarget::Kind::kTime: {
      // Recovery stops before the first commit later than the target, so one must exist.
      const std::string when = pipeline::FormatUnixMicros(target.time);
      int64_t first_after = -1;
      pipeline::UnixMicros last_commit = 0;
      for (size_t i = 0; i < frames.size(); ++i) {
        last_commit = std::max(last_commit, frames[i].header.last_data_ts);
        if (first_after < 0 && frames[i].header.last_data_ts > target.time) first_after = i;
      }
      if (first_after < 0) {
        return absl::OutOfRangeError(absl::StrCat(
            "target ", when, " is after the latest synced commit (",
            pipeline::FormatUnixMicros(last_commit), "): use --latest to restore everything"));
      }
      last = first_after;
      plan.snapshot = NewestEndingBy(wal, snapshots, Lsn(frames[last].header.start_pos), &skipped);
      if (plan.snapshot == nullptr) return BeforeOldest(snapshots, when);
      plan.description = absl::StrCat("time ", when);
      plan.target_setting = absl::StrCat("recovery_target_time = '", PgTimestamp(target.time), "'");
      plan.replay_to = Lsn(frames[last].header.start_pos);
      break;
    }
    case PgTarget::Kind::kLsn: {
      if (target.lsn >= archive_end) {
        return absl::OutOfRangeError(absl::StrCat("target LSN ", target.lsn.ToString(),
                                                  " is at or after the end of the archived WAL (",
                                                  archive_end.ToString(), ")"));
      }
      while (last > 0 && frames[last].header.start_pos > target.lsn.value()) --last;
      plan.snapshot = NewestEndingBy(wal, snapshots, target.lsn, &skipped);
      if (plan.snapshot == nullptr) return BeforeOldest(snapshots, target.lsn.ToString());
      plan.description = absl::StrCat("lsn ", target.lsn.ToString());
      plan.target_setting = absl::StrCat("recovery_target_lsn = '", target.lsn.ToString(), "'",
                                         target.inclusive ? "" : "\nrecovery_target_inclusive = off");
      plan.replay_to = target.lsn;
      break;
    }
    case PgTarget::Kind::kXid: {
      // Decode from the oldest backup whose start is archived: the commit's LSN picks the backup.
      const SnapshotManifest* oldest = nullptr;
      int64_t from = -1;
      for (const auto& m : snapshots.snapshots()) {
        if (IsPgBackup(m) && (from = StartFrame(wal, m)) >= 0) {
          oldest = &m;
          break;
        }
      }
      if (oldest == nullptr) return BeforeOldest(snapshots, absl::StrCat("xid ", target.xid));
      FERRY_ASSIGN_OR_RETURN(ingest::pg::CommitInfo commit,
                             FindCommit(wal, from, MetaLsn(*oldest, "start_lsn"), target.xid,
                                        segment_bytes, system_id));
      while (last > 0 && frames[last].header.start_pos >= commit.end_lsn.value()) --last;
      plan.snapshot = NewestEndingBy(wal, snapshots, Lsn(commit.end_lsn.value() - 1), &skipped);
      if (plan.snapshot == nullptr) return BeforeOldest(snapshots, absl::StrCat("xid ", target.xid));
      plan.description = absl::StrCat("xid ", target.xid, " (committed ",
                                      pipeline::FormatUnixMicros(commit.commit_time), ")");
      plan.target_setting = absl::StrCat("recovery_target_xid = '", target.xid, "'");
      plan.replay_to = commit.end_lsn;
      break;
    }
  }
  if (!skipped.empty()) {
    absl::StrAppend(&plan.description, ", from backup ", plan.snapshot->id, " (newer backup ", skipped,
                    " skipped: its WAL is not all in the archive)");
  }
  const int64_t first = StartFrame(wal, *plan.snapshot);
  if (first < 0) return StartNotArchived(*plan.snapshot);
  // wal-fetch serves whole segments and recovery reads ahead of what it replays: every frame
  // of the segments it may ask for must be intact, not only those up to the target.
  const uint64_t needed_to = (plan.replay_to.value() + kReadAheadMargin) / segment_bytes * segment_bytes + segment_bytes;
  while (last + 1 < static_cast<int64_t>(frames.size()) && frames[last + 1].header.start_pos < needed_to) ++last;
  FERRY_RETURN_IF_ERROR(CheckContiguous(wal, first, std::max(first, last)));
  plan.first_frame = first;
  plan.last_frame = std::max(first, last);
  return plan;
}

absl::StatusOr<WalCheck> CheckRestoreWal(const storage::StreamLog& wal, const PgRestorePlan& plan,
                                         uint64_t segment_bytes, uint64_t system_id,
                                         const std::atomic<bool>* cancel) {
  WalScan scan;
  absl::Status st =
      ScanWal(wal, plan.first_frame, plan.last_frame, MetaLsn(*plan.snapshot, "start_lsn"), segment_bytes, system_id,
              [&](const ingest::pg::CommitInfo&) { return cancel != nullptr && cancel->load(); }, &scan);
  if (st.ok()) return WalCheck{scan.last_record_start, scan.last_record_end};
  const Lsn consistent = MetaLsn(*plan.snapshot, "end_lsn");
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

absl::Status CheckPgWindowWal(const std::string& archive_path, const std::string& source) {
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * wal, archive->Stream(source, pipeline::StreamKind::kPgWal));
  uint64_t segment_bytes = 0, system_id = 0;
  FERRY_RETURN_IF_ERROR(WalFacts(*archive, source, &segment_bytes, &system_id));
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive->SnapshotDir(source), false));
  for (const auto& m : store->snapshots()) {
    if (!IsPgBackup(m)) continue;
    const int64_t first = StartFrame(*wal, m);
    if (first < 0) continue;  // outside the window (retention took its start)
    PgRestorePlan plan;
    plan.snapshot = &m;
    plan.first_frame = first;
    plan.last_frame = static_cast<int64_t>(wal->frames().size()) - 1;
    FERRY_RETURN_IF_ERROR(CheckContiguous(*wal, plan.first_frame, plan.last_frame));
    return CheckRestoreWal(*wal, plan, segment_bytes, system_id).status();
  }
  return absl::OkStatus();  // no backup: nothing is restorable, which the window says
}

RestoreWindow PgRestorableWindow(const storage::StreamLog& wal, const storage::SnapshotStore& snapshots) {
  RestoreWindow w;
  w.why_not = "no base backup yet";
  const auto& frames = wal.frames();
  for (const auto& m : snapshots.snapshots()) {
    if (!IsPgBackup(m)) continue;
    const int64_t first = StartFrame(wal, m);
    if (first < 0) {
      w.why_not = std::string(StartNotArchived(m).message());
      continue;
    }
    absl::Status st = CheckContiguous(wal, first, static_cast<int64_t>(frames.size()) - 1);
    if (!st.ok()) {
      w.why_not = std::string(st.message());
      continue;
    }
    if (MetaLsn(m, "end_lsn").value() > frames.back().header.end_pos) {
      w.why_not = absl::StrCat("backup ", m.id, " is not consistent until WAL ", m.Get("end_lsn"),
                               " is archived");
      continue;
    }
    w.valid = true;
    w.earliest = MetaTime(m, "end_time");
    for (size_t i = first; i < frames.size(); ++i) {
      w.latest = std::max(w.latest, frames[i].header.last_data_ts);
    }
    w.latest = std::max(w.latest, w.earliest);
    w.why_not.clear();
    return w;
  }
  return w;
}

absl::StatusOr<PgRestored> RestorePostgresTo(const std::string& archive_path,
                                              const std::string& source, const PgTarget& target,
                                              const std::string& to,
                                              const std::string& ferry_binary) {
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  // Checked before anything is written: recovery would fail later, less clearly.
  FERRY_RETURN_IF_ERROR(CheckServerUserCanRead(archive_path));
  if (auto keys = storage::ProcessKeys()) {
    FERRY_RETURN_IF_ERROR(CheckServerUserCanReadKeyFile(keys->origin()));
  }
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * wal, archive->Stream(source, pipeline::StreamKind::kPgWal));
  uint64_t segment_bytes = 0, system_id = 0;
  FERRY_RETURN_IF_ERROR(WalFacts(*archive, source, &segment_bytes, &system_id));
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive->SnapshotDir(source), false));
  // Everything is checked before the target directory is touched.
  FERRY_RETURN_IF_ERROR(CheckEmptyTarget(to));
  FERRY_ASSIGN_OR_RETURN(PgRestorePlan plan,
                         PlanPgRestore(*wal, *store, target, segment_bytes, system_id));
  if (target.standby && target.kind != PgTarget::Kind::kLatest) {
    return absl::InvalidArgumentError("--standby follows the archive: it goes with --latest only");
  }
  // Every frame recovery will read is checked while the backup is copied (both read at disk
  // speed, on two threads); damage fails the restore and takes back what was written.
  const bool existed = std::filesystem::exists(to);
  std::atomic<bool> cancel{false};
  absl::StatusOr<WalCheck> check = absl::UnknownError("not run");
  std::thread checker([&] { check = CheckRestoreWal(*wal, plan, segment_bytes, system_id, &cancel); });
  absl::Status copied;
  {
    ProgressBar bar(absl::StrCat("restore ", plan.snapshot->id));
    copied = MaterialiseSnapshot(*store, *plan.snapshot, to, [&](uint64_t d, uint64_t t) { bar.Update(d, t); });
  }
  if (!copied.ok()) cancel = true;
  checker.join();
  absl::Status st = !copied.ok() ? copied : check.status();
  std::string setting = plan.target_setting;
  if (st.ok() && target.kind == PgTarget::Kind::kLatest && !target.standby) {
    // An explicit target at the archive's last record: PostgreSQL itself refuses to promote
    // short of it ("recovery ended before configured recovery target was reached").
    if (!check->last_record_start.valid()) {
      st = absl::DataLossError(absl::StrCat("the archive has no complete WAL record after backup ",
                                            plan.snapshot->id, "'s start"));
    } else {
      setting = absl::StrCat("recovery_target_lsn = '", check->last_record_start.ToString(), "'");
    }
  }
  if (st.ok()) st = WriteRecoverySettings(to, ferry_binary, archive_path, source, setting, target.standby);
  if (!st.ok()) {
    // A failed restore leaves --to as it found it.
    std::error_code ec;
    if (existed) {
      for (const auto& entry : std::filesystem::directory_iterator(to, ec)) std::filesystem::remove_all(entry.path(), ec);
    } else {
      std::filesystem::remove_all(to, ec);
    }
    return st;
  }
  PgRestored out;
  out.must_reach = target.kind == PgTarget::Kind::kLatest && !target.standby ? check->last_record_end : pipeline::Lsn();
  if (target.kind == PgTarget::Kind::kLsn && target.inclusive) out.must_reach = target.lsn;
  out.summary = absl::StrCat("restored backup ", plan.snapshot->id, " (consistent at ", plan.snapshot->Get("end_lsn"),
                             ") into ", to, "; every WAL frame to the target checked; recovery replays WAL to ",
                             plan.description,
                             target.kind == PgTarget::Kind::kLatest && !target.standby
                                 ? absl::StrCat(" (the last archived record, ", check->last_record_start.ToString(), ")")
                                 : "");
  return out;
}

absl::Status CheckEmptyTarget(const std::string& target) {
  DIR* d = opendir(target.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return absl::OkStatus();
    return storage::ErrnoStatus("open target directory", target, errno);
  }
  bool empty = true;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") empty = false;
  }
  closedir(d);
  if (!empty) {
    return absl::FailedPreconditionError(absl::StrCat(
        "target directory ", target, " is not empty: restore into a new or empty directory"));
  }
  return absl::OkStatus();
}

absl::Status MaterialiseSnapshot(const storage::SnapshotStore& store,
                                 const SnapshotManifest& snapshot, const std::string& target,
                                 const std::function<void(uint64_t, uint64_t)>& progress) {
  FERRY_RETURN_IF_ERROR(CheckEmptyTarget(target));
  if (mkdir(target.c_str(), 0700) != 0 && errno != EEXIST) {
    return storage::ErrnoStatus("create", target, errno);
  }
  const uint64_t total = snapshot.RawBytes();
  uint64_t done = 0;
  auto write_all = [&]() -> absl::Status {
    for (const auto& e : snapshot.entries) {
      const std::string path = absl::StrCat(target, "/", e.path);
      if (e.type == storage::SnapshotEntry::Type::kDir) {
        // Owner-writable while we fill it; PostgreSQL wants 0700 anyway.
        if (mkdir(path.c_str(), (e.mode & 07777) | 0700) != 0 && errno != EEXIST) {
          return storage::ErrnoStatus("create", path, errno);
        }
        continue;
      }
      const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (e.mode & 0777) | 0600);
      if (fd < 0) return storage::ErrnoStatus("create", path, errno);
      absl::Status st = store.ReadFile(e, [&](absl::string_view bytes) -> absl::Status {
        while (!bytes.empty()) {
          const ssize_t n = write(fd, bytes.data(), bytes.size());
          if (n < 0) {
            if (errno == EINTR) continue;
            return storage::ErrnoStatus("write", path, errno);
          }
          bytes.remove_prefix(static_cast<size_t>(n));
          done += static_cast<uint64_t>(n);
        }
        if (progress) progress(done, total);
        return absl::OkStatus();
      });
      if (close(fd) != 0 && st.ok()) st = storage::ErrnoStatus("close", path, errno);
      FERRY_RETURN_IF_ERROR(st);
      const struct timespec times[2] = {{e.mtime, 0}, {e.mtime, 0}};
      (void)utimensat(AT_FDCWD, path.c_str(), times, 0);  // cosmetic: keep the server's mtimes
    }
    return absl::OkStatus();
  };
  absl::Status st = write_all();
  if (!st.ok()) {
    // Leave nothing half-restored that could be mistaken for a good copy.
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(target, ec)) {
      std::filesystem::remove_all(entry.path(), ec);
    }
  }
  return st;
}

namespace {

// `s` as one shell word (restore_command runs under /bin/sh) inside a postgresql.conf string:
// single-quoted for the shell, with each ' of `s` closing, escaping and reopening the quote;
// then, for the conf file's own quoting, every ' doubled and every backslash escaped.
std::string ConfShellWord(const std::string& s) {
  std::string shell = "'";
  for (char c : s) shell += c == '\'' ? std::string("'\\''") : std::string(1, c);
  shell += "'";
  std::string conf;
  for (char c : shell) {
    if (c == '\'') {
      conf += "''";
    } else if (c == '\\') {
      conf += "\\\\";
    } else {
      conf += c;
    }
  }
  return conf;
}

}  // namespace

absl::Status WriteRecoverySettings(const std::string& target, const std::string& ferry_binary,
                                   const std::string& archive, const std::string& source,
                                   const std::string& target_setting, bool standby) {
  const std::string abs_archive = std::filesystem::absolute(archive).lexically_normal().string();
  // A standby asks restore_command for the next segment again and again (every
  // wal_retrieve_retry_interval) until it is promoted; recovery ends at the archive's end.
  const std::string signal_file = absl::StrCat(target, standby ? "/standby.signal" : "/recovery.signal");
  std::ofstream signal(signal_file);
  signal.close();
  if (!signal) return absl::InternalError(absl::StrCat("create ", signal_file));
  std::ofstream conf(target + "/postgresql.auto.conf", std::ios::app);
  // Later lines win over the ones the backup brought along. A clone must neither archive
  // into anyone's archive nor wait for a synchronous standby.
  // restore_command runs in the data directory, so %p is pg_wal/RECOVERYXLOG and wal-fetch's
  // decompress-ahead spool is pg_wal/.ferry-prefetch; recovery_end_command removes what is
  // left in it once recovery is over.
  // An encrypted archive's key file goes along in the environment (storage/archive_keys.h).
  const auto keys = storage::ProcessKeys();
  const std::string fetch =
      absl::StrCat(keys != nullptr ? absl::StrCat(storage::kKeyFileEnv, "=", ConfShellWord(keys->origin()), " ") : "",
                   ConfShellWord(ferry_binary), " wal-fetch --archive ", ConfShellWord(abs_archive), " --source ",
                   ConfShellWord(source));
  conf << "\n# ferry restore\n"
       << "restore_command = '" << fetch << " %f %p'\n"
       << "recovery_end_command = '" << fetch << " --drop-spool pg_wal/.ferry-prefetch'\n"
       << "recovery_target_timeline = 'latest'\n";
  if (!target_setting.empty()) {
    conf << target_setting << "\n"
         << "recovery_target_action = 'promote'\n";
  }
  conf << "archive_mode = off\n"
       << "synchronous_standby_names = ''\n";
  conf.close();
  if (!conf) return absl::InternalError(absl::StrCat("write ", target, "/postgresql.auto.conf"));
  return absl::OkStatus();
}

}  // namespace ferry::tools
