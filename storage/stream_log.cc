// StreamLog: segment files of frames, index files, reading and verification. Recovery at open
// (index reconciliation, segment scans, the torn tail) is in stream_log_recovery.cc.
#include "storage/stream_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "pipeline/change_event.h"
#include "pipeline/check.h"
#include "pipeline/endian.h"
#include "storage/segment_format.h"
#include "storage/stream_log_internal.h"

namespace ferry::storage {
namespace {

using pipeline::FrameHeader;

absl::Status MakeDirs(const std::string& path) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty()) FERRY_RETURN_IF_ERROR(CreateDirectory(cur));
    }
    if (i < path.size()) cur.push_back(path[i]);
  }
  return absl::OkStatus();
}

// Writes zeros to file[from, to) without syncing.
absl::Status WriteZeros(DurableFile& file, uint64_t from, uint64_t to) {
  static const std::string* const kZeros = new std::string(1 << 20, '\0');
  for (uint64_t at = from; at < to;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kZeros->size(), to - at));
    FERRY_RETURN_IF_ERROR(file.WriteAt(at, absl::string_view(*kZeros).substr(0, n)));
    at += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadRange(const std::string& path, uint64_t offset, size_t len) {
  std::string out;
  FERRY_RETURN_IF_ERROR(ReadRangeInto(path, offset, len, &out));
  return out;
}

}  // namespace

absl::Status ReadRangeInto(const std::string& path, uint64_t offset, size_t len, std::string* out, bool to_eof) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  out->resize(len);
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, out->data() + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : 0;
      close(fd);
      if (err != 0) return ErrnoStatus("read", path, err);
      if (to_eof) {
        out->resize(done);
        return absl::OkStatus();
      }
      return absl::DataLossError(absl::StrCat("read ", path, ": unexpected end of file at offset ",
                                              offset + done));
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return ErrnoStatus("stat", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

StreamLog::StreamLog(std::string dir, pipeline::StreamKind kind, StreamLogOptions options)
    : dir_(std::move(dir)), kind_(kind), options_(options) {}

StreamLog::~StreamLog() {
  if (active_index_ != nullptr) (void)active_index_->Sync();
}

std::string StreamLog::SegmentPath(uint64_t seq) const {
  return absl::StrCat(dir_, "/", SegmentFileName(seq));
}

absl::StatusOr<std::unique_ptr<StreamLog>> StreamLog::Open(const std::string& dir,
                                                           pipeline::StreamKind kind,
                                                           const StreamLogOptions& options) {
  std::unique_ptr<StreamLog> log(new StreamLog(dir, kind, options));
  FERRY_RETURN_IF_ERROR(log->Load());
  return log;
}

absl::Status StreamLog::Load() {
  if (!options_.read_only) FERRY_RETURN_IF_ERROR(MakeDirs(dir_ + "/files"));
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) return ErrnoStatus("open stream directory", dir_, errno);
  while (dirent* e = readdir(d)) {
    uint64_t seq;
    if (ParseSegmentFileName(e->d_name, &seq)) segments_.push_back(seq);
  }
  closedir(d);
  std::sort(segments_.begin(), segments_.end());

  for (size_t i = 0; i < segments_.size(); ++i) {
    const bool is_last = i + 1 == segments_.size();
    if (!is_last) {
      FERRY_RETURN_IF_ERROR(LoadSealedIndex(segments_[i], &frames_));
    } else if (options_.read_only) {
      // A reader (wal-fetch runs once per WAL segment) takes the frames the active index
      // lists and scans only what follows them; payload checksums are checked when a frame
      // is read. The writer never trusts that index: it rescans the whole segment.
      FERRY_ASSIGN_OR_RETURN(uint64_t size, FileSize(SegmentPath(segments_[i])));
      uint64_t listed_end = 0;  // one read of the index for both (wal-fetch opens per segment)
      const uint64_t from = IndexedPrefix(segments_[i], size, &frames_, &listed_end);
      FERRY_RETURN_IF_ERROR(ScanSegment(segments_[i], true, from, &frames_, listed_end));
    } else {
      FERRY_RETURN_IF_ERROR(
          ScanSegment(segments_[i], true, kSegmentHeaderSize, &frames_, IndexedEnd(segments_[i])));
    }
  }
  if (options_.read_only || segments_.empty()) return absl::OkStatus();

  // Reopen the last segment for appending, and rewrite its index from the scan (the index of
  // the active segment is never trusted after a restart).
  active_seq_ = segments_.back();
  FERRY_ASSIGN_OR_RETURN(active_, OpenDurableFile(SegmentPath(active_seq_), options_.writer, false));
  FERRY_ASSIGN_OR_RETURN(zeroed_end_, FileSize(SegmentPath(active_seq_)));
  // Appending resumes after the last frame; what follows it is zeros written ahead (the scan
  // cut anything else away as a torn tail).
  active_size_ = frames_.empty() || frames_.back().segment_seq != active_seq_
                     ? kSegmentHeaderSize
                     : frames_.back().offset + frames_.back().header.frame_size();
  const std::string index_path = absl::StrCat(dir_, "/", IndexFileName(active_seq_));
  FERRY_ASSIGN_OR_RETURN(active_index_, OpenDurableFile(index_path, WriterKind::kPosix, true));
  FERRY_RETURN_IF_ERROR(active_index_->Truncate(0));
  std::string entries;
  for (const FrameLocation& f : frames_) {
    if (f.segment_seq == active_seq_) entries += EncodeIndexEntry(f.offset, f.header);
  }
  FERRY_RETURN_IF_ERROR(active_index_->WriteAt(0, entries));
  active_index_size_ = entries.size();
  return absl::OkStatus();
}

absl::Status StreamLog::Refresh() {
  FERRY_CHECK(options_.read_only);
  std::vector<uint64_t> newer;
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) return ErrnoStatus("open stream directory", dir_, errno);
  while (dirent* e = readdir(d)) {
    uint64_t seq;
    if (ParseSegmentFileName(e->d_name, &seq) && (segments_.empty() || seq > segments_.back())) {
      newer.push_back(seq);
    }
  }
  closedir(d);
  std::sort(newer.begin(), newer.end());
  // The segment that was last: it may have grown, and may be sealed now. Scan it from the end
  // of its last known frame (ScanSegment leaves a torn tail, i.e. a frame mid-write, alone).
  repaired_bytes_ = 0;
  if (!segments_.empty()) {
    const uint64_t seq = segments_.back();
    uint64_t from = kSegmentHeaderSize;
    if (!frames_.empty() && frames_.back().segment_seq == seq) {
      from = frames_.back().offset + frames_.back().header.frame_size();
    }
    FERRY_RETURN_IF_ERROR(ScanSegment(seq, newer.empty(), from, &frames_));
  }
  for (size_t i = 0; i < newer.size(); ++i) {
    segments_.push_back(newer[i]);
    if (i + 1 < newer.size()) {
      FERRY_RETURN_IF_ERROR(LoadSealedIndex(newer[i], &frames_));
    } else {
      FERRY_ASSIGN_OR_RETURN(uint64_t size, FileSize(SegmentPath(newer[i])));
      const uint64_t from = IndexedPrefix(newer[i], size, &frames_);
      FERRY_RETURN_IF_ERROR(ScanSegment(newer[i], true, from, &frames_));
    }
  }
  return absl::OkStatus();
}

absl::Status StreamLog::StartSegment(uint64_t seq) {
  const std::string path = SegmentPath(seq);
  SegmentHeader h;
  h.kind = kind_;
  h.seq = seq;
  h.created_us = pipeline::NowUnixMicros();
  FERRY_ASSIGN_OR_RETURN(auto file, OpenDurableFile(path, options_.writer, true));
  FERRY_RETURN_IF_ERROR(file->Truncate(0));
  // The header first: a reader never sees zeros where it should be (the zeros are synced by
  // the first frame's write).
  FERRY_RETURN_IF_ERROR(file->WriteDurably(0, EncodeSegmentHeader(h)));
  FERRY_RETURN_IF_ERROR(WriteZeros(*file, kSegmentHeaderSize, kSegmentHeaderSize + options_.zero_ahead));
  FERRY_ASSIGN_OR_RETURN(
      auto index, OpenDurableFile(absl::StrCat(dir_, "/", IndexFileName(seq)), WriterKind::kPosix, true));
  FERRY_RETURN_IF_ERROR(index->Truncate(0));
  // The new directory entry must survive a crash before any frame in it is acknowledged.
  FERRY_RETURN_IF_ERROR(SyncDirectory(dir_));
  active_ = std::move(file);
  active_index_ = std::move(index);
  active_seq_ = seq;
  active_size_ = kSegmentHeaderSize;
  zeroed_end_ = kSegmentHeaderSize + options_.zero_ahead;
  active_index_size_ = 0;
  segments_.push_back(seq);
  return absl::OkStatus();
}

absl::Status StreamLog::SealActive() {
  if (active_index_ != nullptr) {
    // A sealed segment's index is loaded as far as it chains; entries it misses are found by
    // scanning the segment, so a failed index write costs a scan, not data.
    if (!FlushIndex().ok()) index_pending_.clear();
    FERRY_RETURN_IF_ERROR(active_index_->Sync());
  }
  // A sealed segment ends at its last frame: the zeros written ahead go (durably, before the
  // next segment exists, so that only the last segment of a stream ever ends in zeros).
  if (active_ != nullptr && zeroed_end_ > active_size_) FERRY_RETURN_IF_ERROR(active_->Truncate(active_size_));
  active_.reset();
  active_index_.reset();
  return absl::OkStatus();
}

absl::Status StreamLog::Write(const pipeline::EncodedFrames& frames, size_t* durable) {
  FERRY_CHECK(!options_.read_only);
  *durable = 0;
  // Frames never span segments: runs of whole frames go to the active segment, which is
  // sealed and replaced once the next frame would take it past segment_bytes.
  size_t run_begin = 0;
  size_t byte_begin = 0;
  size_t run_bytes = 0;
  auto flush_run = [&](size_t end) -> absl::Status {
    if (end == run_begin) return absl::OkStatus();
    FERRY_RETURN_IF_ERROR(WriteToActive(absl::string_view(frames.bytes).substr(byte_begin, run_bytes),
                                        &frames.headers[run_begin], end - run_begin));
    byte_begin += run_bytes;
    run_bytes = 0;
    run_begin = end;
    *durable = end;
    return absl::OkStatus();
  };
  for (size_t i = 0; i < frames.headers.size(); ++i) {
    const size_t size = frames.headers[i].frame_size();
    const uint64_t filled = active_size_ + run_bytes;
    if (active_ == nullptr ||
        (filled > kSegmentHeaderSize && filled + size > options_.segment_bytes)) {
      FERRY_RETURN_IF_ERROR(flush_run(i));
      FERRY_RETURN_IF_ERROR(SealActive());
      FERRY_RETURN_IF_ERROR(StartSegment(segments_.empty() ? 1 : segments_.back() + 1));
    }
    run_bytes += size;
  }
  return flush_run(frames.headers.size());
}

absl::Status StreamLog::WriteToActive(absl::string_view bytes, const FrameHeader* headers,
                                      size_t count) {
  const uint64_t at = active_size_;
  absl::Status st = ZeroAhead(at + bytes.size());
  if (st.ok()) st = active_->WriteDurably(at, bytes);
  if (!st.ok()) {
    // Leave no partial frame behind as if it were good; if even that fails, recovery on the
    // next open truncates the torn tail.
    if (active_->Truncate(at).ok()) zeroed_end_ = at;
    return st;
  }
  uint64_t off = at;
  for (size_t i = 0; i < count; ++i) {
    frames_.push_back(FrameLocation{active_seq_, off, headers[i]});
    index_pending_ += EncodeIndexEntry(off, headers[i]);
    off += headers[i].frame_size();
  }
  active_size_ = off;
  // The frames are durable whatever happens to their index entries: a failed index write
  // (ENOSPC) is retried with the next write, or the index is rebuilt from the segment at open.
  (void)FlushIndex();
  return absl::OkStatus();
}

absl::Status StreamLog::ZeroAhead(uint64_t end) {
  if (options_.zero_ahead == 0 || end + options_.zero_ahead / 2 <= zeroed_end_) return absl::OkStatus();
  // Written before the frames and synced with them: a crash between the two leaves zeros (or
  // a torn frame) after the last durable frame, which recovery tells from damage.
  const uint64_t to = end + options_.zero_ahead;
  FERRY_RETURN_IF_ERROR(WriteZeros(*active_, std::max(end, zeroed_end_), to));
  zeroed_end_ = to;
  return absl::OkStatus();
}

absl::Status StreamLog::FlushIndex() {
  if (index_pending_.empty() || active_index_ == nullptr) return absl::OkStatus();
  absl::Status st = active_index_->WriteAt(active_index_size_, index_pending_);
  if (!st.ok()) return st;
  active_index_size_ += index_pending_.size();
  index_pending_.clear();
  return absl::OkStatus();
}

absl::Status StreamLog::PutFile(absl::string_view name, absl::string_view contents) {
  return WriteFileAtomically(dir_ + "/files", std::string(name), contents);
}

absl::StatusOr<std::string> StreamLog::GetFile(absl::string_view name) const {
  return ReadWholeFile(absl::StrCat(dir_, "/files/", name));
}

std::vector<std::string> StreamLog::ListFiles() const {
  std::vector<std::string> names;
  DIR* d = opendir((dir_ + "/files").c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

const FrameLocation* StreamLog::FirstFrameAfter(uint32_t epoch, uint64_t pos) const {
  auto it = std::lower_bound(frames_.begin(), frames_.end(), std::make_pair(epoch, pos),
                             [](const FrameLocation& f, const std::pair<uint32_t, uint64_t>& key) {
                               return f.header.epoch < key.first ||
                                      (f.header.epoch == key.first && f.header.end_pos <= key.second);
                             });
  return it != frames_.end() && it->header.epoch == epoch ? &*it : nullptr;
}

const FrameLocation* StreamLog::FindFrame(uint32_t epoch, uint64_t pos) const {
  const FrameLocation* f = FirstFrameAfter(epoch, pos);
  return f != nullptr && f->header.start_pos <= pos ? f : nullptr;
}

absl::StatusOr<std::string> StreamLog::ReadFrameBytes(const FrameLocation& loc) const {
  return ReadRange(SegmentPath(loc.segment_seq), loc.offset, loc.header.frame_size());
}

absl::StatusOr<std::vector<pipeline::RecordView>> StreamLog::ReadRecords(
    const FrameLocation& loc, std::string* scratch) const {
  // Frame bytes go to a per-thread buffer that is reused: reading a stream frame by frame
  // then costs no allocation (and no page faults) per frame.
  thread_local std::string bytes;
  FERRY_RETURN_IF_ERROR(ReadRangeInto(SegmentPath(loc.segment_seq), loc.offset, loc.header.frame_size(), &bytes));
  return DecodeFrame(loc, bytes, scratch);
}

void StreamLog::CheckFrames(size_t first, size_t last,
                            const std::function<void(size_t, const absl::Status&)>& on_result) const {
  // Frames that follow each other in one segment are read with one pread (up to 1 MiB): the
  // cost is the checksums and the decoding, not a file open per frame. The buffer stays with
  // the thread (the service's verifier), so it is kept small: it counts in the service's RSS.
  constexpr uint64_t kMaxRead = 1 << 20;
  thread_local std::string bytes;
  std::string scratch;
  size_t i = first;
  while (i <= last && i < frames_.size()) {
    const FrameLocation& head = frames_[i];
    size_t j = i;
    uint64_t end = head.offset + head.header.frame_size();
    while (j + 1 <= last && j + 1 < frames_.size() && frames_[j + 1].segment_seq == head.segment_seq &&
           frames_[j + 1].offset == end && end + frames_[j + 1].header.frame_size() - head.offset <= kMaxRead) {
      ++j;
      end += frames_[j].header.frame_size();
    }
    absl::Status read = ReadRangeInto(SegmentPath(head.segment_seq), head.offset, end - head.offset, &bytes);
    for (size_t k = i; k <= j; ++k) {
      const FrameLocation& loc = frames_[k];
      // A run that cannot be read whole (a file cut short) is read frame by frame, so that
      // only the frames really missing are reported.
      on_result(k, read.ok() ? DecodeFrame(loc, absl::string_view(bytes).substr(loc.offset - head.offset,
                                                                                loc.header.frame_size()),
                                           &scratch)
                                   .status()
                             : ReadRecords(loc, &scratch).status());
    }
    i = j + 1;
  }
}

absl::StatusOr<std::vector<pipeline::RecordView>> StreamLog::DecodeFrame(const FrameLocation& loc,
                                                                         absl::string_view bytes,
                                                                         std::string* scratch) const {
  // The code stays: a missing key (kFailedPrecondition) is not damage.
  auto fail = [&](const absl::Status& st) {
    return absl::Status(st.code(), absl::StrCat(SegmentPath(loc.segment_seq), " at offset ", loc.offset, ": ",
                                                st.message()));
  };
  auto h = pipeline::DecodeFrameHeader(bytes);
  if (!h.ok()) return fail(h.status());
  // Readers find frames by the index; the frame itself (sealed: authenticated) must agree.
  if (h->epoch != loc.header.epoch || h->start_pos != loc.header.start_pos || h->end_pos != loc.header.end_pos) {
    return fail(absl::DataLossError("the frame's positions differ from its index entry's"));
  }
  const absl::string_view stored = bytes.substr(pipeline::kFrameHeaderSize);
  if (h->codec == pipeline::Codec::kNone && h->key_id == 0) {
    // The views must outlive the next call: a payload stored as is is kept in *scratch.
    scratch->assign(stored.data(), stored.size());
    auto records = pipeline::DecodeFramePayload(*h, *scratch, nullptr);
    if (!records.ok()) return fail(records.status());
    return records;
  }
  auto records = pipeline::DecodeFramePayload(*h, stored, scratch, keys());
  if (!records.ok()) return fail(records.status());
  return records;
}

uint64_t StreamLog::Verify(std::vector<Damage>* damage, uint64_t* unopened) const {
  uint64_t digest = 0;
  bool have_prev = false, sealed_seen = false;
  FrameHeader prev;
  const FrameLocation* prev_loc = nullptr;
  std::string scratch;
  damage->insert(damage->end(), open_damage_.begin(), open_damage_.end());
  // A spot the open already reported, between two listed frames, explains their gap.
  auto reported_between = [&](const FrameLocation* a, const FrameLocation& b) {
    for (const Damage& d : open_damage_) {
      const bool after_a = a == nullptr || d.file != SegmentPath(a->segment_seq) || d.offset > a->offset;
      const bool before_b = d.file != SegmentPath(b.segment_seq) || d.offset < b.offset;
      if (after_a && before_b && (d.file == SegmentPath(b.segment_seq) ||
                                  (a != nullptr && d.file == SegmentPath(a->segment_seq)))) {
        return true;
      }
    }
    return false;
  };
  for (const FrameLocation& loc : frames_) {
    const std::string file = SegmentPath(loc.segment_seq);
    // A damaged frame is reported once: the frames after it are checked against the
    // positions its index entry gives.
    auto damaged = [&](const absl::Status& st) {
      // The spot names the file; a reason from a read ("read FILE: ...") need not again.
      damage->push_back({file, loc.offset, absl::StrReplaceAll(st.message(), {{absl::StrCat(" ", file), ""}})});
      prev = loc.header;
      prev_loc = &loc;
      have_prev = true;
    };
    auto bytes = ReadFrameBytes(loc);
    if (!bytes.ok()) {
      damaged(bytes.status());
      continue;
    }
    auto h = pipeline::DecodeFrameHeader(*bytes);
    absl::Status st = h.status();
    if (h.ok()) {
      st = pipeline::DecodeFramePayload(*h, absl::string_view(*bytes).substr(pipeline::kFrameHeaderSize),
                                        &scratch, keys())
               .status();
      // Without any key a sealed frame's checksums were still checked (they come first). With
      // keys, a key id they lack is damage: nothing else could hide a frame from a keyed verify.
      if (absl::IsFailedPrecondition(st) && h->key_id != 0 && keys() == nullptr) {
        if (unopened != nullptr) ++*unopened;
        st = absl::OkStatus();
      }
      // With keys, a clear frame after sealed ones was written without the key (a writer that
      // lost it is refused, see Archive::Open) or put there by someone without it.
      if (st.ok() && keys() != nullptr && h->key_id == 0 && sealed_seen) {
        st = absl::DataLossError("a frame in the clear after sealed frames (written without the key, or tampered)");
      }
      sealed_seen = sealed_seen || h->key_id != 0;
    }
    if (!st.ok()) {
      damaged(st);
      continue;
    }
    if (have_prev && h->epoch == prev.epoch && h->start_pos != prev.end_pos && !reported_between(prev_loc, loc)) {
      damage->push_back({file, loc.offset,
                         absl::StrCat(h->start_pos > prev.end_pos ? "gap" : "overlap", ": frame starts at ",
                                      pipeline::FormatStreamPosition(kind_, h->start_pos),
                                      ", previous frame ended at ", pipeline::FormatStreamPosition(kind_, prev.end_pos))});
    }
    char chain[8 + pipeline::kFrameHeaderSize];
    pipeline::PutLe64(chain, digest);
    std::memcpy(chain + 8, bytes->data(), pipeline::kFrameHeaderSize);
    digest = pipeline::Checksum64(absl::string_view(chain, sizeof(chain)));
    prev = *h;
    prev_loc = &loc;
    have_prev = true;
  }
  return digest;
}

uint64_t StreamLog::total_bytes() const {
  uint64_t total = 0;
  for (uint64_t seq : segments_) {
    auto size = FileSize(SegmentPath(seq));
    if (!size.ok()) continue;
    // The last segment's zeros written ahead hold nothing yet.
    if (seq == segments_.back()) {
      const bool has_frames = !frames_.empty() && frames_.back().segment_seq == seq;
      *size = std::min(*size, has_frames ? frames_.back().offset + frames_.back().header.frame_size()
                                         : kSegmentHeaderSize);
    }
    total += *size;
  }
  return total;
}

}  // namespace ferry::storage
