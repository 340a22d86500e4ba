// PostgreSQL point-in-time restore: planning (which backup, which frames), the restorable
// window, materialising a snapshot and writing the recovery settings. The WAL check is in
// wal_check.cc.
#include "restore/pg_restore.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ingest/pg/wal_decoder.h"
#include "local/local_postgres.h"
#include "local/progress_bar.h"
#include "pipeline/check.h"
#include "storage/archive.h"

namespace ferry::restore {
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

// A plan being made, between PlanPgRestore's steps.
struct Planning {
  PgRestorePlan plan;
  int64_t last = 0;     // the frame replay must reach
  std::string skipped;  // a newer backup passed over: its WAL is not all archived
};

absl::Status PlanLatest(const storage::StreamLog& wal, const storage::SnapshotStore& snapshots, Planning* p) {
  const Lsn archive_end(wal.frames().back().header.end_pos);
  // The newest backup whose WAL is all archived: a newer one whose end never reached the
  // archive (ferry run stopped during it) must not block the newest restore there is.
  const SnapshotManifest* newest = nullptr;
  for (const auto& m : snapshots.snapshots()) {
    if (!IsPgBackup(m)) continue;
    newest = &m;
    if (MetaLsn(m, "end_lsn") <= archive_end && StartFrame(wal, m) >= 0) {
      p->plan.snapshot = &m;
      p->skipped.clear();
    } else {
      p->skipped = m.id;
    }
  }
  if (newest == nullptr) return BeforeOldest(snapshots, "latest");
  if (p->plan.snapshot == nullptr) {
    return absl::OutOfRangeError(absl::StrCat(
        "no backup has all its WAL archived: backup ", newest->id, " ends at ", newest->Get("end_lsn"),
        " but the archive's WAL ends at ", archive_end.ToString(), ": wait until ferry run has archived it"));
  }
  p->plan.description = "latest";
  p->plan.replay_to = archive_end;
  return absl::OkStatus();
}

absl::Status PlanTime(const storage::StreamLog& wal, const storage::SnapshotStore& snapshots,
                      const PgTarget& target, Planning* p) {
  const auto& frames = wal.frames();
  // Recovery stops before the first commit later than the target, so one must exist.
  const std::string when = pipeline::FormatUnixMicros(target.time);
  int64_t first_after = -1;
  pipeline::UnixMicros last_commit = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    last_commit = std::max(last_commit, frames[i].header.last_data_ts);
    if (first_after < 0 && frames[i].header.last_data_ts > target.time) first_after = i;
  }
  if (first_after < 0) {
    return absl::OutOfRangeError(absl::StrCat("target ", when, " is after the latest synced commit (",
                                              pipeline::FormatUnixMicros(last_commit),
                                              "): use --latest to restore everything"));
  }
  p->last = first_after;
  const Lsn replay_to(frames[p->last].header.start_pos);
  p->plan.snapshot = NewestEndingBy(wal, snapshots, replay_to, &p->skipped);
  if (p->plan.snapshot == nullptr) return BeforeOldest(snapshots, when);
  p->plan.description = absl::StrCat("time ", when);
  p->plan.target_setting = absl::StrCat("recovery_target_time = '", PgTimestamp(target.time), "'");
  p->plan.replay_to = replay_to;
  return absl::OkStatus();
}

absl::Status PlanLsn(const storage::StreamLog& wal, const storage::SnapshotStore& snapshots, const PgTarget& target,
                     Planning* p) {
  const auto& frames = wal.frames();
  const Lsn archive_end(frames.back().header.end_pos);
  if (target.lsn >= archive_end) {
    return absl::OutOfRangeError(absl::StrCat("target LSN ", target.lsn.ToString(),
                                              " is at or after the end of the archived WAL (", archive_end.ToString(),
                                              ")"));
  }
  while (p->last > 0 && frames[p->last].header.start_pos > target.lsn.value()) --p->last;
  p->plan.snapshot = NewestEndingBy(wal, snapshots, target.lsn, &p->skipped);
  if (p->plan.snapshot == nullptr) return BeforeOldest(snapshots, target.lsn.ToString());
  p->plan.description = absl::StrCat("lsn ", target.lsn.ToString());
  p->plan.target_setting = absl::StrCat("recovery_target_lsn = '", target.lsn.ToString(), "'",
                                        target.inclusive ? "" : "\nrecovery_target_inclusive = off");
  p->plan.replay_to = target.lsn;
  return absl::OkStatus();
}

absl::Status PlanXid(const storage::StreamLog& wal, const storage::SnapshotStore& snapshots, const PgTarget& target,
                     uint64_t segment_bytes, uint64_t system_id, Planning* p) {
  const auto& frames = wal.frames();
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
  FERRY_ASSIGN_OR_RETURN(ingest::pg::CommitInfo commit, FindCommit(wal, from, MetaLsn(*oldest, "start_lsn"),
                                                                   target.xid, segment_bytes, system_id));
  while (p->last > 0 && frames[p->last].header.start_pos >= commit.end_lsn.value()) --p->last;
  p->plan.snapshot = NewestEndingBy(wal, snapshots, Lsn(commit.end_lsn.value() - 1), &p->skipped);
  if (p->plan.snapshot == nullptr) return BeforeOldest(snapshots, absl::StrCat("xid ", target.xid));
  p->plan.description =
      absl::StrCat("xid ", target.xid, " (committed ", pipeline::FormatUnixMicros(commit.commit_time), ")");
  p->plan.target_setting = absl::StrCat("recovery_target_xid = '", target.xid, "'");
  p->plan.replay_to = commit.end_lsn;
  return absl::OkStatus();
}

// The frames recovery will read: from the one holding the backup's first WAL byte to the end
// of the segments it may ask for, which must follow each other without a hole.
absl::Status PlanFrames(const storage::StreamLog& wal, uint64_t segment_bytes, Planning* p) {
  const auto& frames = wal.frames();
  const int64_t first = StartFrame(wal, *p->plan.snapshot);
  if (first < 0) return StartNotArchived(*p->plan.snapshot);
  // wal-fetch serves whole segments and recovery reads ahead of what it replays: every frame
  // of the segments it may ask for must be intact, not only those up to the target.
  const uint64_t needed_to =
      (p->plan.replay_to.value() + kReadAheadMargin) / segment_bytes * segment_bytes + segment_bytes;
  while (p->last + 1 < static_cast<int64_t>(frames.size()) && frames[p->last + 1].header.start_pos < needed_to) {
    ++p->last;
  }
  FERRY_RETURN_IF_ERROR(CheckContiguous(wal, first, std::max(first, p->last)));
  p->plan.first_frame = first;
  p->plan.last_frame = std::max(first, p->last);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PgRestorePlan> PlanPgRestore(const storage::StreamLog& wal,
                                            const storage::SnapshotStore& snapshots,
                                            const PgTarget& target, uint64_t segment_bytes,
                                            uint64_t system_id) {
  if (wal.frames().empty()) return absl::OutOfRangeError("the archive has no WAL for this source yet");
  Planning p;
  p.last = static_cast<int64_t>(wal.frames().size()) - 1;
  switch (target.kind) {
    case PgTarget::Kind::kLatest:
      FERRY_RETURN_IF_ERROR(PlanLatest(wal, snapshots, &p));
      break;
    case PgTarget::Kind::kTime:
      FERRY_RETURN_IF_ERROR(PlanTime(wal, snapshots, target, &p));
      break;
    case PgTarget::Kind::kLsn:
      FERRY_RETURN_IF_ERROR(PlanLsn(wal, snapshots, target, &p));
      break;
    case PgTarget::Kind::kXid:
      FERRY_RETURN_IF_ERROR(PlanXid(wal, snapshots, target, segment_bytes, system_id, &p));
      break;
  }
  if (!p.skipped.empty()) {
    absl::StrAppend(&p.plan.description, ", from backup ", p.plan.snapshot->id, " (newer backup ", p.skipped,
                    " skipped: its WAL is not all in the archive)");
  }
  FERRY_RETURN_IF_ERROR(PlanFrames(wal, segment_bytes, &p));
  return p.plan;
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
  FERRY_RETURN_IF_ERROR(local::CheckServerUserCanRead(archive_path));
  if (auto keys = storage::ProcessKeys()) {
    FERRY_RETURN_IF_ERROR(local::CheckServerUserCanReadKeyFile(keys->origin()));
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
    local::ProgressBar bar(absl::StrCat("restore ", plan.snapshot->id));
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
  if (!signal) return storage::ErrnoStatus("create", signal_file, errno);
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
  if (!conf) return storage::ErrnoStatus("write", target + "/postgresql.auto.conf", errno);
  return absl::OkStatus();
}

}  // namespace ferry::restore
