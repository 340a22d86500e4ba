// Frame encoding and decoding; layout in docs/archive-format.md.
#include "pipeline/frame.h"

#include <zstd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "pipeline/compress.h"
#include "pipeline/endian.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ferry::pipeline {
namespace {

constexpr size_t kRecordHeaderSize = 12;  // u32 len + u64 end_pos
constexpr size_t kHeaderAadSize = 64;     // header bytes a sealed payload authenticates
constexpr uint8_t kFlagSealed = 1;

// Header bytes 0..63: every field but the two checksums.
void PutHeaderFields(const FrameHeader& h, char* hp) {
  PutLe32(hp + 0, kFrameMagic);
  hp[4] = static_cast<char>(h.codec);
  hp[5] = static_cast<char>(h.key_id != 0 ? kFlagSealed : 0);
  PutLe16(hp + 6, h.key_id);
  PutLe32(hp + 8, h.record_count);
  PutLe32(hp + 12, h.raw_len);
  PutLe32(hp + 16, h.stored_len);
  PutLe32(hp + 20, h.epoch);
  PutLe64(hp + 24, h.start_pos);
  PutLe64(hp + 32, h.end_pos);
  PutLe64(hp + 40, static_cast<uint64_t>(h.arrival_us));
  PutLe64(hp + 48, static_cast<uint64_t>(h.first_data_ts));
  PutLe64(hp + 56, static_cast<uint64_t>(h.last_data_ts));
}

}  // namespace

absl::string_view StreamKindName(StreamKind kind) {
  switch (kind) {
    case StreamKind::kPgWal:
      return "pg-wal";
    case StreamKind::kPgChanges:
      return "pg-changes";
    case StreamKind::kRedisCommands:
      return "redis-commands";
  }
  return "unknown";
}

absl::StatusOr<StreamKind> ParseStreamKind(absl::string_view name) {
  for (StreamKind k : {StreamKind::kPgWal, StreamKind::kPgChanges, StreamKind::kRedisCommands}) {
    if (StreamKindName(k) == name) return k;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown stream kind \"", name, "\""));
}

uint64_t Checksum64(absl::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

absl::StatusOr<FrameHeader> EncodeFrame(const FrameInput& input, int zstd_level, std::string* out,
                                        const Keyring* keys) {
  size_t raw_len = 0;
  FrameHeader h;
  h.epoch = input.epoch;
  h.start_pos = input.start_pos;
  h.end_pos = input.start_pos;
  h.arrival_us = input.arrival_us;
  for (const Record& r : input.records) {
    raw_len += kRecordHeaderSize + r.payload.size();
    h.end_pos = r.end_pos;
    if (r.data_ts != 0) {
      if (h.first_data_ts == 0) h.first_data_ts = r.data_ts;
      h.last_data_ts = r.data_ts;
    }
  }
  if (raw_len > kMaxFramePayload) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame payload of ", raw_len, " bytes exceeds the limit of ", kMaxFramePayload));
  }
  h.record_count = static_cast<uint32_t>(input.records.size());
  h.raw_len = static_cast<uint32_t>(raw_len);
  h.codec = zstd_level > 0 ? Codec::kZstd : Codec::kNone;
  if (keys != nullptr) h.key_id = keys->current_id();

  // Records are serialised once (the one memcpy per byte): straight behind the header when
  // stored as they are, else into a scratch buffer that zstd compresses, or sealing
  // encrypts, behind the header. Both scratch buffers are reused: no allocation per frame.
  const size_t header_at = out->size();
  const size_t payload_at = header_at + kFrameHeaderSize;
  thread_local std::string raw;
  thread_local std::string compressed;
  const bool in_place = h.codec == Codec::kNone && h.key_id == 0;
  char* p;
  if (in_place) {
    out->resize(payload_at + raw_len);
    p = out->data() + payload_at;
  } else {
    raw.resize(raw_len);
    p = raw.data();
  }
  for (const Record& r : input.records) {
    PutLe32(p, static_cast<uint32_t>(r.payload.size()));
    PutLe64(p + 4, r.end_pos);
    std::memcpy(p + kRecordHeaderSize, r.payload.data(), r.payload.size());
    p += kRecordHeaderSize + r.payload.size();
  }

  absl::string_view plain = raw;  // what is sealed, when it is
  if (!in_place) out->resize(payload_at);
  if (h.codec == Codec::kZstd) {
    compressed.clear();
    absl::Status st = AppendZstd(raw, zstd_level, h.key_id != 0 ? &compressed : out);
    if (!st.ok()) {
      out->resize(header_at);
      return st;
    }
    plain = compressed;
  }
  h.stored_len = static_cast<uint32_t>(h.key_id != 0 ? plain.size() + kSealOverhead : out->size() - payload_at);
  // The header is complete but for its checksums before sealing: bytes 0..63 are the
  // additional authenticated data, so no header field can change without the key.
  PutHeaderFields(h, out->data() + header_at);
  if (h.key_id != 0) {
    char aad[kHeaderAadSize];  // a copy: sealing appends to *out, which may move it
    std::memcpy(aad, out->data() + header_at, sizeof(aad));
    absl::Status st = keys->Seal(h.key_id, absl::string_view(aad, sizeof(aad)), plain, out);
    if (!st.ok()) {
      out->resize(header_at);
      return st;
    }
  }
  char* hp = out->data() + header_at;
  h.payload_checksum = Checksum64(absl::string_view(hp + kFrameHeaderSize, h.stored_len));
  PutLe64(hp + 64, h.payload_checksum);
  PutLe64(hp + 72, Checksum64(absl::string_view(hp, 72)));
  return h;
}

absl::StatusOr<FrameHeader> DecodeFrameHeader(absl::string_view bytes) {
  if (bytes.size() < kFrameHeaderSize) {
    return absl::DataLossError(absl::StrCat("frame header truncated: ", bytes.size(), " of ",
                                            kFrameHeaderSize, " bytes"));
  }
  const char* p = bytes.data();
  if (GetLe32(p) != kFrameMagic) return absl::DataLossError("bad frame magic");
  if (GetLe64(p + 72) != Checksum64(absl::string_view(p, 72))) {
    return absl::DataLossError("frame header checksum mismatch");
  }
  FrameHeader h;
  const uint8_t codec = static_cast<uint8_t>(p[4]);
  if (codec > static_cast<uint8_t>(Codec::kZstd)) {
    return absl::DataLossError(absl::StrCat("unknown frame codec ", codec));
  }
  h.codec = static_cast<Codec>(codec);
  const uint8_t flags = static_cast<uint8_t>(p[5]);
  h.key_id = GetLe16(p + 6);
  if ((flags & ~kFlagSealed) != 0 || ((flags & kFlagSealed) != 0) != (h.key_id != 0)) {
    return absl::DataLossError(absl::StrCat("frame header has unknown flags ", flags, " or key id ", h.key_id));
  }
  h.record_count = GetLe32(p + 8);
  h.raw_len = GetLe32(p + 12);
  h.stored_len = GetLe32(p + 16);
  h.epoch = GetLe32(p + 20);
  h.start_pos = GetLe64(p + 24);
  h.end_pos = GetLe64(p + 32);
  h.arrival_us = static_cast<UnixMicros>(GetLe64(p + 40));
  h.first_data_ts = static_cast<UnixMicros>(GetLe64(p + 48));
  h.last_data_ts = static_cast<UnixMicros>(GetLe64(p + 56));
  h.payload_checksum = GetLe64(p + 64);
  if (h.raw_len > kMaxFramePayload || h.stored_len > ZSTD_compressBound(kMaxFramePayload) + kSealOverhead ||
      h.end_pos < h.start_pos) {
    return absl::DataLossError("frame header has impossible sizes or positions");
  }
  return h;
}

absl::StatusOr<std::vector<RecordView>> DecodeFramePayload(const FrameHeader& h,
                                                           absl::string_view stored,
                                                           std::string* scratch,
                                                           const Keyring* keys) {
  if (stored.size() != h.stored_len) {
    return absl::DataLossError(
        absl::StrCat("frame payload is ", stored.size(), " bytes, header says ", h.stored_len));
  }
  if (Checksum64(stored) != h.payload_checksum) {
    return absl::DataLossError("frame payload checksum mismatch");
  }
  absl::string_view payload = stored;
  if (h.key_id != 0) {
    if (keys == nullptr || !keys->Has(h.key_id)) return MissingKeyError(h.key_id, keys);
    char aad[kHeaderAadSize];
    PutHeaderFields(h, aad);
    // Compressed plaintext goes to a reused buffer; an uncompressed one is the records
    // themselves, which the views point into.
    thread_local std::string opened;
    std::string* dst = h.codec == Codec::kZstd ? &opened : scratch;
    FERRY_RETURN_IF_ERROR(keys->Open(h.key_id, absl::string_view(aad, sizeof(aad)), stored, dst));
    payload = *dst;
  }
  absl::string_view raw;
  if (h.codec == Codec::kZstd) {
    FERRY_RETURN_IF_ERROR(DecompressZstd(payload, h.raw_len, "frame payload", scratch));
    raw = *scratch;
  } else {
    if (h.raw_len != payload.size()) return absl::DataLossError("uncompressed frame sizes differ");
    raw = payload;
  }
  std::vector<RecordView> records;
  records.reserve(h.record_count);
  size_t at = 0;
  uint64_t last_pos = h.start_pos;
  for (uint32_t i = 0; i < h.record_count; ++i) {
    if (raw.size() - at < kRecordHeaderSize) return absl::DataLossError("record header truncated");
    const uint32_t len = GetLe32(raw.data() + at);
    const uint64_t end_pos = GetLe64(raw.data() + at + 4);
    at += kRecordHeaderSize;
    if (raw.size() - at < len) return absl::DataLossError("record payload truncated");
    if (end_pos < last_pos) return absl::DataLossError("record positions go backwards");
    records.push_back(RecordView{end_pos, raw.substr(at, len)});
    at += len;
    last_pos = end_pos;
  }
  if (at != raw.size()) return absl::DataLossError("trailing bytes after the last record");
  if (last_pos != h.end_pos) return absl::DataLossError("last record does not end at end_pos");
  return records;
}

}  // namespace ferry::pipeline
