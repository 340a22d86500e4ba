// On-disk constants of a stream's segment and index files. Normative description:
// docs/archive-format.md ("Segment files", "Index files"); change both together.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pipeline/frame.h"

namespace ferry::storage {

inline constexpr char kSegmentMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'S', 'E', 'G'};
inline constexpr uint32_t kArchiveVersion = 1;
inline constexpr size_t kSegmentHeaderSize = 64;
inline constexpr size_t kIndexEntrySize = 64;

struct SegmentHeader {
  uint32_t version = kArchiveVersion;
  pipeline::StreamKind kind = pipeline::StreamKind::kPgWal;
  uint64_t seq = 0;  // the number in the file name
  pipeline::UnixMicros created_us = 0;
};

std::string EncodeSegmentHeader(const SegmentHeader& h);
// kDataLoss for a bad magic or checksum; kFailedPrecondition for a newer archive version.
absl::StatusOr<SegmentHeader> DecodeSegmentHeader(absl::string_view bytes);

// "0000000000000001.seg" / ".idx": 16 lower-case hex digits, so names sort by sequence.
std::string SegmentFileName(uint64_t seq);
std::string IndexFileName(uint64_t seq);
// Parses a segment file name; false if `name` is not one.
bool ParseSegmentFileName(absl::string_view name, uint64_t* seq);

// One index entry per frame: where it is and what it covers (a copy of its header's fields).
std::string EncodeIndexEntry(uint64_t offset, const pipeline::FrameHeader& h);
bool DecodeIndexEntry(absl::string_view bytes, uint64_t* offset, pipeline::FrameHeader* h);

}  // namespace ferry::storage
