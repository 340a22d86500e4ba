// StreamLog's recovery side, run at open and on Refresh: reconciling a segment's index with
// the segment, scanning a segment's frames, repairing a torn tail (a crash mid-write) and
// telling it from damage to written data.
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "pipeline/endian.h"
#include "storage/segment_format.h"
#include "storage/stream_log.h"
#include "storage/stream_log_internal.h"

namespace ferry::storage {
namespace {

using pipeline::FrameHeader;

// True when bytes[off..] holds a complete frame whose header and payload check out.
bool ValidFrameAt(absl::string_view bytes, size_t off, FrameHeader* out) {
  auto h = pipeline::DecodeFrameHeader(bytes.substr(off));
  if (!h.ok() || bytes.size() - off < h->frame_size()) return false;
  absl::string_view payload = bytes.substr(off + pipeline::kFrameHeaderSize, h->stored_len);
  if (pipeline::Checksum64(payload) != h->payload_checksum) return false;
  *out = *h;
  return true;
}

// Where the first frame that checks out at or after `from` starts, or npos.
size_t NextValidFrame(absl::string_view bytes, size_t from) {
  FrameHeader h;
  for (size_t at = from; at + pipeline::kFrameHeaderSize <= bytes.size(); ++at) {
    if (pipeline::GetLe32(bytes.data() + at) == pipeline::kFrameMagic && ValidFrameAt(bytes, at, &h)) return at;
  }
  return absl::string_view::npos;
}

// Why bytes[off..] is not a frame. `acknowledged`: the index records a durable frame there.
std::string FrameDamageReason(absl::string_view bytes, size_t off, bool acknowledged) {
  std::string reason = "incomplete frame";
  if (auto bad = pipeline::DecodeFrameHeader(bytes.substr(off)); !bad.ok()) {
    reason = std::string(bad.status().message());
  } else if (bytes.size() - off >= bad->frame_size()) {
    reason = "frame payload checksum mismatch";
  }
  if (!acknowledged) return reason;
  return reason == "incomplete frame"
             ? "the file ends inside a frame its index records as durable: acknowledged data was lost "
               "(the file was truncated)"
             : reason + " in a frame its index records as durable (acknowledged)";
}

std::string LostAcknowledgedData(uint64_t listed_end) {
  return absl::StrCat("the file ends here but its index records durable frames up to offset ", listed_end,
                      ": acknowledged data was lost (the file was truncated)");
}

}  // namespace

uint64_t StreamLog::IndexedPrefix(uint64_t seq, uint64_t seg_size, std::vector<FrameLocation>* out,
                                  uint64_t* listed_end) {
  uint64_t expect = kSegmentHeaderSize;
  uint64_t chained = kSegmentHeaderSize;  // where the chain ends, inside the file or not
  auto index = ReadWholeFile(absl::StrCat(dir_, "/", IndexFileName(seq)));
  if (index.ok()) {
    for (size_t at = 0; at + kIndexEntrySize <= index->size(); at += kIndexEntrySize) {
      FrameLocation loc;
      loc.segment_seq = seq;
      if (!DecodeIndexEntry(absl::string_view(*index).substr(at, kIndexEntrySize), &loc.offset, &loc.header) ||
          loc.offset != chained) {
        break;
      }
      chained = loc.offset + loc.header.frame_size();
      if (chained <= seg_size && expect == loc.offset) {
        expect = chained;
        out->push_back(loc);
      }
    }
  }
  if (listed_end != nullptr) *listed_end = chained;
  return expect;
}

uint64_t StreamLog::IndexedEnd(uint64_t seq) {
  std::vector<FrameLocation> listed;
  return IndexedPrefix(seq, UINT64_MAX, &listed);
}

absl::Status StreamLog::Damaged(const std::string& file, uint64_t offset, absl::string_view reason) {
  if (!options_.survey) {
    return absl::DataLossError(absl::StrCat(file, " at offset ", offset, ": ", reason, " (ferry verify lists every damaged spot)"));
  }
  open_damage_.push_back({file, offset, std::string(reason)});
  return absl::OkStatus();
}

absl::Status StreamLog::LoadSealedIndex(uint64_t seq, std::vector<FrameLocation>* out) {
  FERRY_ASSIGN_OR_RETURN(uint64_t seg_size, FileSize(SegmentPath(seq)));
  // The index is derived data: use it only if it covers the segment exactly; otherwise
  // rebuild it from the segment (a crash before the index was synced).
  const size_t before = out->size();
  uint64_t listed_end = 0;
  if (IndexedPrefix(seq, seg_size, out, &listed_end) == seg_size && out->size() > before) {
    // Frames are indexed only once synced: an index listing frames past the file's end (cut
    // at a frame boundary, so the frames that remain all check out) lost acknowledged data.
    if (listed_end > seg_size) return Damaged(SegmentPath(seq), seg_size, LostAcknowledgedData(listed_end));
    return absl::OkStatus();
  }
  out->resize(before);
  return ScanSegment(seq, false, kSegmentHeaderSize, out, listed_end);
}

absl::StatusOr<bool> StreamLog::CheckSegmentHeader(uint64_t seq, bool is_last, const std::string& path,
                                                   uint64_t size) {
  std::string head;
  FERRY_RETURN_IF_ERROR(ReadRangeInto(path, 0, std::min<uint64_t>(size, kSegmentHeaderSize), &head));
  auto header = DecodeSegmentHeader(head);
  if (!header.ok()) {
    // Torn at creation: the header never made it, or only zeros did, and the index vouches
    // for no frame (else acknowledged data was lost, and that is reported below).
    std::string whole;
    if (is_last && (size < kSegmentHeaderSize ||
                    (IndexedEnd(seq) <= kSegmentHeaderSize && ReadRangeInto(path, 0, size, &whole, true).ok() &&
                     whole.find_first_not_of('\0') == std::string::npos))) {
      FERRY_RETURN_IF_ERROR(RemoveTornSegment(seq, path, size));
      return false;
    }
    FERRY_RETURN_IF_ERROR(Damaged(path, 0, header.status().message()));
    return false;
  }
  if (header->seq != seq || header->kind != kind_) {
    FERRY_RETURN_IF_ERROR(
        Damaged(path, 0, absl::StrCat("segment header names sequence ", header->seq, " of another stream")));
    return false;
  }
  return true;
}

absl::Status StreamLog::RemoveTornSegment(uint64_t seq, const std::string& path, uint64_t size) {
  // Crash while the segment was being created: no frame was ever in it.
  repaired_bytes_ += size;
  if (!options_.read_only) {
    if (unlink(path.c_str()) != 0) return ErrnoStatus("remove torn segment", path, errno);
    (void)unlink(absl::StrCat(dir_, "/", IndexFileName(seq)).c_str());
    segments_.pop_back();
  }
  return absl::OkStatus();
}

absl::Status StreamLog::CutTornTail(const std::string& path, uint64_t offset, uint64_t bytes) {
  repaired_bytes_ += bytes;
  if (!options_.read_only) {
    FERRY_ASSIGN_OR_RETURN(auto file, OpenDurableFile(path, WriterKind::kPosix, false));
    FERRY_RETURN_IF_ERROR(file->Truncate(offset));
  }
  return absl::OkStatus();
}

absl::Status StreamLog::ScanSegment(uint64_t seq, bool is_last, uint64_t from,
                                    std::vector<FrameLocation>* out, uint64_t durable_end) {
  const std::string path = SegmentPath(seq);
  FERRY_ASSIGN_OR_RETURN(uint64_t size, FileSize(path));
  FERRY_ASSIGN_OR_RETURN(const bool has_frames, CheckSegmentHeader(seq, is_last, path, size));
  if (!has_frames) return absl::OkStatus();
  // bytes[i] is the segment's byte at offset from + i.
  std::string bytes;
  FERRY_RETURN_IF_ERROR(ReadRangeInto(path, from, size - from, &bytes, /*to_eof=*/true));
  size_t off = 0;
  bool damaged_here = false;
  while (off < bytes.size()) {
    FrameHeader h;
    if (ValidFrameAt(bytes, off, &h)) {
      out->push_back(FrameLocation{seq, from + off, h});
      off += h.frame_size();
      continue;
    }
    const bool acknowledged = from + off < durable_end;
    // Zeros from here to the end of the last segment are space its writer filled ahead
    // (StreamLogOptions::zero_ahead): nothing was written there yet.
    if (is_last && !acknowledged && bytes.find_first_not_of('\0', off) == std::string::npos) break;
    // A torn tail is what a crash mid-write leaves: damage at the end of the last segment
    // with no complete frame after it. Anything else is corruption of written data.
    const size_t next = NextValidFrame(bytes, off + 1);
    const bool later_frame = is_last && next != absl::string_view::npos;
    if (is_last && !later_frame && !acknowledged) {
      FERRY_RETURN_IF_ERROR(CutTornTail(path, from + off, bytes.size() - off));
      break;
    }
    damaged_here = true;
    FERRY_RETURN_IF_ERROR(Damaged(path, from + off, FrameDamageReason(bytes, off, acknowledged && !later_frame)));
    // Surveying: go on from the next frame that checks out, if any.
    if (next == absl::string_view::npos) break;
    off = next;
  }
  if (from + bytes.size() < durable_end && !damaged_here) {
    // Frames are indexed only once synced: the file lost acknowledged data.
    return Damaged(path, from + bytes.size(), LostAcknowledgedData(durable_end));
  }
  return absl::OkStatus();
}

}  // namespace ferry::storage
