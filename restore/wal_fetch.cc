// wal-fetch: a WAL segment or history file materialised from the archive's frames, and
// written where PostgreSQL asked for it.
#include "restore/wal_fetch.h"

#include <cstdio>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/pg/replication_conn.h"
#include "pipeline/check.h"
#include "storage/durable_file.h"

namespace ferry::restore {
using pipeline::TimelineId;

namespace {
constexpr absl::string_view kNotInArchivePayload = "ferry.dev/wal-fetch/not-in-archive";
}  // namespace

absl::Status NotInArchive(absl::string_view message) {
  absl::Status st = absl::NotFoundError(message);
  st.SetPayload(kNotInArchivePayload, absl::Cord("1"));
  return st;
}

bool IsNotInArchive(const absl::Status& status) {
  return absl::IsNotFound(status) && status.GetPayload(kNotInArchivePayload).has_value();
}

absl::Status WriteReplacing(const std::string& dest, absl::string_view bytes) {
  // Write beside the destination, then rename: PostgreSQL never sees a half-written file.
  const std::string tmp = dest + ".ferry-tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return storage::ErrnoStatus("create", tmp, errno);
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    return storage::ErrnoStatus("write", tmp, ok ? errno : err);
  }
  if (std::rename(tmp.c_str(), dest.c_str()) != 0) return storage::ErrnoStatus("rename", dest, errno);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> WalSegmentBytes(const storage::Archive& archive, const std::string& source) {
  FERRY_ASSIGN_OR_RETURN(storage::SourceIdentity id, archive.GetIdentity(source));
  uint64_t seg_bytes = 0;
  if (!absl::SimpleAtoi(id["wal_segment_size"], &seg_bytes) || seg_bytes == 0) {
    return absl::DataLossError(absl::StrCat("archive source \"", source, "\" has no wal_segment_size"));
  }
  return seg_bytes;
}

absl::Status FetchWalFile(storage::Archive& archive, const std::string& source,
                          const std::string& name, const std::string& dest) {
  FERRY_ASSIGN_OR_RETURN(WalFile file, MaterialiseWalFile(archive, source, name));
  return WriteReplacing(dest, file.bytes);
}

namespace {

// A history file, which recovery probes for timelines that may not exist yet.
absl::StatusOr<WalFile> HistoryFile(const storage::StreamLog& log, const std::string& name) {
  auto contents = log.GetFile(name);
  if (!contents.ok()) {
    if (absl::IsNotFound(contents.status())) return NotInArchive(absl::StrCat(name, " is not in the archive"));
    return contents.status();
  }
  return WalFile{std::move(*contents), true};
}

// Which timeline owns each position of a segment of timeline `tli`: the history of `tli`
// lists where each ancestor ended.
struct TimelineOwners {
  uint32_t tli = 0;
  std::vector<client::pg::HistoryEntry> history;

  // The timeline that owns `pos`; *until: where its ownership ends.
  uint32_t Owner(uint64_t pos, uint64_t* until) const {
    for (const auto& h : history) {
      if (pos < h.switch_lsn.value()) {
        *until = h.switch_lsn.value();
        return h.tli.value();
      }
    }
    *until = UINT64_MAX;
    return tli;
  }
};

absl::StatusOr<TimelineOwners> OwnersOf(const storage::StreamLog& log, TimelineId tli) {
  TimelineOwners owners;
  owners.tli = tli.value();
  if (tli.value() > 1) {
    char hist_name[32];
    std::snprintf(hist_name, sizeof(hist_name), "%08X.history", tli.value());
    auto text = log.GetFile(hist_name);
    if (text.ok()) {
      FERRY_ASSIGN_OR_RETURN(owners.history, client::pg::ParseTimelineHistory(*text));
    }
  }
  return owners;
}

// Copies the archived bytes of the segment that starts at seg_lo into *out (the segment's
// size), from *covered on and as far as the archive holds them without a break, each from the
// timeline that owns it; *covered ends where they end.
absl::Status CopyArchivedBytes(const storage::StreamLog& log, const TimelineOwners& owners, uint64_t seg_lo,
                               std::string* out, uint64_t* covered) {
  const uint64_t seg_hi = seg_lo + out->size();
  std::string scratch;
  while (*covered < seg_hi) {
    uint64_t until = 0;
    const uint32_t epoch = owners.Owner(*covered, &until);
    const uint64_t piece_hi = std::min(seg_hi, until);
    const storage::FrameLocation* f = log.FindFrame(epoch, *covered);
    if (f == nullptr) break;  // the archive has nothing more for this position
    FERRY_ASSIGN_OR_RETURN(auto records, log.ReadRecords(*f, &scratch));
    const uint64_t before = *covered;
    for (const pipeline::RecordView& r : records) {
      const uint64_t r_lo = r.end_pos - r.payload.size();
      if (r.end_pos <= *covered || r_lo > *covered) continue;
      const uint64_t hi = std::min(r.end_pos, piece_hi);
      std::memcpy(out->data() + (*covered - seg_lo), r.payload.data() + (*covered - r_lo), hi - *covered);
      *covered = hi;
      if (*covered == piece_hi) break;
    }
    if (*covered == before) {
      return absl::DataLossError(absl::StrCat("frame at ", log.SegmentPath(f->segment_seq), " offset ", f->offset,
                                              " claims ", pipeline::Lsn(*covered).ToString(),
                                              " but its records do not hold it; run ferry verify"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<WalFile> MaterialiseWalFile(storage::Archive& archive, const std::string& source,
                                           const std::string& name) {
  auto stream = archive.Stream(source, pipeline::StreamKind::kPgWal);
  if (absl::IsNotFound(stream.status())) {
    // A wrong --source is a configuration error, not the end of the archive.
    return absl::FailedPreconditionError(
        absl::StrCat("the archive has no PostgreSQL WAL for source \"", source, "\" (", stream.status().message(),
                     "): check restore_command's --source against ferry ls"));
  }
  FERRY_RETURN_IF_ERROR(stream.status());
  const storage::StreamLog* log = *stream;
  if (absl::EndsWith(name, ".history")) return HistoryFile(*log, name);
  FERRY_ASSIGN_OR_RETURN(const uint64_t seg_bytes, WalSegmentBytes(archive, source));
  TimelineId tli;
  uint64_t segno = 0;
  if (!client::pg::ParseWalFileName(name, seg_bytes, &tli, &segno)) {
    // .partial and .backup files are never needed for recovery.
    return NotInArchive(absl::StrCat(name, " is not a WAL segment ferry archives"));
  }
  const uint64_t seg_lo = segno * seg_bytes;
  const uint64_t seg_hi = seg_lo + seg_bytes;
  FERRY_ASSIGN_OR_RETURN(const TimelineOwners owners, OwnersOf(*log, tli));
  std::string out(seg_bytes, '\0');
  uint64_t covered = seg_lo;  // bytes [seg_lo, covered) are filled
  FERRY_RETURN_IF_ERROR(CopyArchivedBytes(*log, owners, seg_lo, &out, &covered));
  if (covered < seg_hi) {
    // Serve a partial segment (or say the segment is not there) only at the very end of the
    // archive's stream for that timeline; anywhere else a missing range is a gap, reported,
    // never papered over with zeros or taken for the end of the archive.
    uint64_t ignored;
    if (const storage::FrameLocation* f = log->FirstFrameAfter(owners.Owner(covered, &ignored), covered)) {
      return absl::DataLossError(absl::StrCat(
          "gap in the archive of source \"", source, "\": ", name, " has bytes up to ",
          pipeline::Lsn(covered).ToString(), " but the stream continues at ",
          pipeline::Lsn(f->header.start_pos).ToString(), "; run ferry verify"));
    }
  }
  if (covered == seg_lo) return NotInArchive(absl::StrCat(name, " is not in the archive"));
  return WalFile{std::move(out), covered == seg_hi};
}

}  // namespace ferry::restore
