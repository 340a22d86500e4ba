#include "storage/segment_format.h"

#include <cstdio>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "pipeline/endian.h"

namespace ferry::storage {

using pipeline::GetLe16;
using pipeline::GetLe32;
using pipeline::GetLe64;
using pipeline::PutLe16;
using pipeline::PutLe32;
using pipeline::PutLe64;

std::string EncodeSegmentHeader(const SegmentHeader& h) {
  std::string b(kSegmentHeaderSize, '\0');
  std::memcpy(b.data(), kSegmentMagic, 8);
  PutLe32(b.data() + 8, h.version);
  PutLe16(b.data() + 12, static_cast<uint16_t>(h.kind));
  PutLe64(b.data() + 16, h.seq);
  PutLe64(b.data() + 24, static_cast<uint64_t>(h.created_us));
  PutLe64(b.data() + 56, pipeline::Checksum64(absl::string_view(b.data(), 56)));
  return b;
}

absl::StatusOr<SegmentHeader> DecodeSegmentHeader(absl::string_view b) {
  if (b.size() < kSegmentHeaderSize) return absl::DataLossError("segment header truncated");
  if (std::memcmp(b.data(), kSegmentMagic, 8) != 0) return absl::DataLossError("bad segment magic");
  if (GetLe64(b.data() + 56) != pipeline::Checksum64(b.substr(0, 56))) {
    return absl::DataLossError("segment header checksum mismatch");
  }
  SegmentHeader h;
  h.version = GetLe32(b.data() + 8);
  if (h.version > kArchiveVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "segment format version ", h.version, " is newer than this ferry (", kArchiveVersion,
        "): upgrade ferry"));
  }
  h.kind = static_cast<pipeline::StreamKind>(GetLe16(b.data() + 12));
  h.seq = GetLe64(b.data() + 16);
  h.created_us = static_cast<pipeline::UnixMicros>(GetLe64(b.data() + 24));
  return h;
}

std::string SegmentFileName(uint64_t seq) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%016llx.seg", static_cast<unsigned long long>(seq));
  return buf;
}

std::string IndexFileName(uint64_t seq) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%016llx.idx", static_cast<unsigned long long>(seq));
  return buf;
}

bool ParseSegmentFileName(absl::string_view name, uint64_t* seq) {
  if (name.size() != 20 || !absl::EndsWith(name, ".seg")) return false;
  for (char c : name.substr(0, 16)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return absl::SimpleHexAtoi(name.substr(0, 16), seq);
}

std::string EncodeIndexEntry(uint64_t offset, const pipeline::FrameHeader& h) {
  std::string b(kIndexEntrySize, '\0');
  char* p = b.data();
  PutLe64(p + 0, offset);
  PutLe32(p + 8, h.epoch);
  PutLe32(p + 12, static_cast<uint32_t>(h.frame_size()));
  PutLe64(p + 16, h.start_pos);
  PutLe64(p + 24, h.end_pos);
  PutLe64(p + 32, static_cast<uint64_t>(h.arrival_us));
  PutLe64(p + 40, static_cast<uint64_t>(h.first_data_ts));
  PutLe64(p + 48, static_cast<uint64_t>(h.last_data_ts));
  PutLe64(p + 56, pipeline::Checksum64(absl::string_view(p, 56)));
  return b;
}

bool DecodeIndexEntry(absl::string_view b, uint64_t* offset, pipeline::FrameHeader* h) {
  if (b.size() < kIndexEntrySize) return false;
  const char* p = b.data();
  if (GetLe64(p + 56) != pipeline::Checksum64(b.substr(0, 56))) return false;
  *offset = GetLe64(p);
  h->epoch = GetLe32(p + 8);
  const uint32_t frame_size = GetLe32(p + 12);
  if (frame_size < pipeline::kFrameHeaderSize) return false;
  h->stored_len = frame_size - static_cast<uint32_t>(pipeline::kFrameHeaderSize);
  h->start_pos = GetLe64(p + 16);
  h->end_pos = GetLe64(p + 24);
  h->arrival_us = static_cast<pipeline::UnixMicros>(GetLe64(p + 32));
  h->first_data_ts = static_cast<pipeline::UnixMicros>(GetLe64(p + 40));
  h->last_data_ts = static_cast<pipeline::UnixMicros>(GetLe64(p + 48));
  return true;
}

}  // namespace ferry::storage
