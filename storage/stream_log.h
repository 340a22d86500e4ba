// StreamLog: one append-only log of frames for one (source, stream kind), stored as numbered
// segment files plus per-segment index files. Directory layout and crash semantics:
// docs/archive-format.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pipeline/frame.h"
#include "pipeline/sink.h"
#include "storage/durable_file.h"

namespace ferry::storage {

struct StreamLogOptions {
  WriterKind writer = WriterKind::kPosix;
  uint64_t segment_bytes = 64 << 20;  // a segment is sealed once it holds at least this much
  // The writer keeps at least this many zero bytes written and synced after the active
  // segment's last frame, so that an append overwrites allocated blocks within the file's size
  // and its fdatasync is one device flush, with no journal commit (measured on ext4: half the
  // time and half the context switches of an appending sync). Sealing cuts them off. 0: none.
  uint64_t zero_ahead = 1 << 20;
  bool read_only = true;              // read-only never modifies files (a torn tail is ignored)
  // Read-only only: damage found at open does not fail it. The frames around a damaged spot
  // are listed; Verify reports the spot. For reports (ferry verify, ls), never for restores.
  bool survey = false;
  // Opens sealed frames (ReadRecords, Verify); null: sealed frames cannot be read.
  std::shared_ptr<const pipeline::Keyring> keys;
};

// Where a frame lives. The header here carries the index fields (positions, epoch, times,
// size); ReadFrame returns the complete header from the segment.
struct FrameLocation {
  uint64_t segment_seq = 0;
  uint64_t offset = 0;
  pipeline::FrameHeader header;
};

// A damaged spot found by Verify or at open.
struct Damage {
  std::string file;
  uint64_t offset = 0;
  std::string reason;
};

// Thread-compatible: one writer (the batcher's worker thread) and no concurrent readers in the
// same object; other processes may read the files while it writes.
class StreamLog final : public pipeline::FrameConsumer {
 public:
  // Opens the stream in `dir` (created when writable). Recovery: an incomplete or damaged
  // last frame in the last segment, with no valid frame after it, is a torn tail from a crash
  // mid-write and is truncated (writable) or ignored (read-only). Any other damage is
  // kDataLoss naming file and offset. So is a last segment shorter than the frames its index
  // records as durable (written only after they were synced): acknowledged data was lost.
  static absl::StatusOr<std::unique_ptr<StreamLog>> Open(const std::string& dir,
                                                         pipeline::StreamKind kind,
                                                         const StreamLogOptions& options);
  ~StreamLog() override;

  // FrameConsumer: appends the frames durably (data fdatasync'ed; a new segment's directory
  // entry fsync'ed) before returning. A write error truncates the partial write away and is
  // returned (ENOSPC as kResourceExhausted); the log stays consistent and the call may be
  // retried with the frames after *durable. An fdatasync error aborts the process.
  absl::Status Write(const pipeline::EncodedFrames& frames, size_t* durable) override;
  absl::Status Write(const pipeline::EncodedFrames& frames) {
    size_t durable = 0;
    return Write(frames, &durable);
  }
  // Side files (timeline histories) in dir/files/, written atomically.
  absl::Status PutFile(absl::string_view name, absl::string_view contents) override;
  absl::StatusOr<std::string> GetFile(absl::string_view name) const;  // kNotFound if absent
  std::vector<std::string> ListFiles() const;

  // Read-only logs: adds the frames the writing process appended since Open or the last
  // Refresh (a tailing reader, such as the Kafka shipper). A frame still being written is
  // left for the next call. Sealed segments removed by retention stay listed.
  absl::Status Refresh();

  // Every frame in stream order (the index, in memory).
  const std::vector<FrameLocation>& frames() const { return frames_; }
  bool empty() const { return frames_.empty(); }
  // The frame of `epoch` whose records cover position `pos` (start_pos <= pos < end_pos), found
  // by binary search: frames are ordered by (epoch, position) because epochs (timelines) only
  // grow within a stream. Null when the archive has no such byte.
  const FrameLocation* FindFrame(uint32_t epoch, uint64_t pos) const;
  // The first frame of `epoch` that ends after `pos`, or null.
  const FrameLocation* FirstFrameAfter(uint32_t epoch, uint64_t pos) const;
  // Bytes of the torn tail truncated (or ignored) at open (zeros the writer wrote ahead of its
  // last frame are not torn: see StreamLogOptions::zero_ahead).
  uint64_t repaired_bytes() const { return repaired_bytes_; }

  // Reads and checks one frame, decoding its records into views of *scratch.
  absl::StatusOr<std::vector<pipeline::RecordView>> ReadRecords(const FrameLocation& loc,
                                                                std::string* scratch) const;
  // Checks frames()[first..last] as ReadRecords would, reading the frames that follow each
  // other in a segment together; on_result(index, status) for each (kNotFound: its segment
  // file is gone). For read-back verification, where a file open per frame would dominate.
  void CheckFrames(size_t first, size_t last, const std::function<void(size_t, const absl::Status&)>& on_result) const;
  // Reads one frame's raw bytes (header + stored payload) as they are on disk.
  absl::StatusOr<std::string> ReadFrameBytes(const FrameLocation& loc) const;

  // Checks every frame's checksums and decodes it; positions must be contiguous within an
  // epoch. Appends what is wrong to *damage (each damaged spot once, and first what a survey
  // open found). Returns a digest (XXH3-64 chained over every
  // frame's bytes) that two byte-identical streams share. A log without keys checks sealed
  // frames as far as their checksums go and counts them in *unopened; a log with keys reports
  // a frame under a key id they lack, and a clear frame after sealed ones, as damage.
  uint64_t Verify(std::vector<Damage>* damage, uint64_t* unopened = nullptr) const;

  // Damage a survey open found (Verify reports it too).
  const std::vector<Damage>& open_damage() const { return open_damage_; }

  // The keys sealed frames are opened with (null: none).
  const pipeline::Keyring* keys() const { return options_.keys.get(); }

  const std::string& dir() const { return dir_; }
  std::string SegmentPath(uint64_t seq) const;
  uint64_t total_bytes() const;

 private:
  StreamLog(std::string dir, pipeline::StreamKind kind, StreamLogOptions options);
  absl::Status Load();
  absl::Status LoadSealedIndex(uint64_t seq, std::vector<FrameLocation>* out);
  // Checks a frame's bytes (read from the segment) against `loc` and decodes its records.
  absl::StatusOr<std::vector<pipeline::RecordView>> DecodeFrame(const FrameLocation& loc, absl::string_view bytes,
                                                                std::string* scratch) const;
  // Appends the frames seq's index lists, as far as they chain from the segment header and
  // lie within seg_size; returns the offset where that chain ends. *listed_end: where the
  // chain ends counting entries past seg_size too (the frames the index says are durable).
  uint64_t IndexedPrefix(uint64_t seq, uint64_t seg_size, std::vector<FrameLocation>* out,
                         uint64_t* listed_end = nullptr);
  // Validates frames from offset `from` (where a frame starts) to the end of the segment.
  // Damage before `durable_end` (where the frames the index records as durable end; 0 when
  // not checked) is never a torn tail, and a segment ending before it has lost frames.
  absl::Status ScanSegment(uint64_t seq, bool is_last, uint64_t from, std::vector<FrameLocation>* out,
                           uint64_t durable_end = 0);
  // ScanSegment's steps. CheckSegmentHeader: false when there are no frames to scan (a
  // segment torn at creation, removed when writable; a damaged header, when surveying).
  absl::StatusOr<bool> CheckSegmentHeader(uint64_t seq, bool is_last, const std::string& path, uint64_t size);
  absl::Status RemoveTornSegment(uint64_t seq, const std::string& path, uint64_t size);
  // Counts the torn tail from `offset` (`bytes` long) and, when writable, truncates it away.
  absl::Status CutTornTail(const std::string& path, uint64_t offset, uint64_t bytes);
  // Where the frames that seq's index lists (as far as they chain) end.
  uint64_t IndexedEnd(uint64_t seq);
  // Survey opens record the damage and go on; others fail with kDataLoss naming it.
  absl::Status Damaged(const std::string& file, uint64_t offset, absl::string_view reason);
  absl::Status StartSegment(uint64_t seq);
  absl::Status SealActive();
  // Keeps options_.zero_ahead zero bytes written after `end` (the active segment's end once
  // the next write is done); synced by that write's fdatasync.
  absl::Status ZeroAhead(uint64_t end);
  absl::Status WriteToActive(absl::string_view bytes, const pipeline::FrameHeader* headers,
                             size_t count);
  absl::Status FlushIndex();

  const std::string dir_;
  const pipeline::StreamKind kind_;
  const StreamLogOptions options_;
  std::vector<uint64_t> segments_;  // sequence numbers, ascending
  std::vector<FrameLocation> frames_;
  uint64_t repaired_bytes_ = 0;
  std::vector<Damage> open_damage_;  // survey opens only

  // The segment being appended (writable logs only).
  std::unique_ptr<DurableFile> active_;
  std::unique_ptr<DurableFile> active_index_;
  uint64_t active_seq_ = 0;
  uint64_t active_size_ = 0;  // where its last frame ends: the next frame's offset
  uint64_t zeroed_end_ = 0;   // the file's size: zeros from active_size_ to here
  uint64_t active_index_size_ = 0;
  // Index entries of durable frames not yet written to the index file (its write failed;
  // retried with the next write, and rebuilt from the segment at open if never written).
  std::string index_pending_;
};

}  // namespace ferry::storage
