// Frames: a batch of records of one stream, compressed together, with a self-checking header.
// The byte layout is normative in docs/archive-format.md ("Frame"); change both together.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "pipeline/cipher.h"
#include "pipeline/position.h"

namespace ferry::pipeline {

// The kinds of stream a source produces; each is one append-only log per source.
enum class StreamKind : uint16_t {
  kPgWal = 1,          // raw PostgreSQL WAL bytes; position = LSN
  kPgChanges = 2,      // logical change events; position = commit end LSN
  kRedisCommands = 3,  // Redis replication stream; position = replication offset
};

// "pg-wal", "pg-changes", "redis-commands": the stream's directory name in the archive.
absl::string_view StreamKindName(StreamKind kind);
absl::StatusOr<StreamKind> ParseStreamKind(absl::string_view name);

// One unit of a stream: its bytes and the stream position just after them.
// For byte streams (WAL, Redis) a record starts where the previous one ended.
struct Record {
  uint64_t end_pos = 0;
  // Timestamp carried by the data itself (a WAL commit time), 0 when it carries none.
  UnixMicros data_ts = 0;
  std::string payload;
};

// A borrowed view of a decoded record; valid while the buffer it points into lives.
struct RecordView {
  uint64_t end_pos = 0;
  absl::string_view payload;
};

enum class Codec : uint8_t { kNone = 0, kZstd = 1 };

inline constexpr uint32_t kFrameMagic = 0x314D5246;  // "FRM1" little-endian
inline constexpr size_t kFrameHeaderSize = 80;
// Upper bound on a frame's uncompressed payload; a header claiming more is corrupt.
inline constexpr uint32_t kMaxFramePayload = 64u << 20;

// The decoded fixed-size frame header. Field order and widths: docs/archive-format.md.
struct FrameHeader {
  Codec codec = Codec::kZstd;
  uint32_t record_count = 0;
  uint32_t raw_len = 0;     // payload bytes before compression
  uint32_t stored_len = 0;  // payload bytes as stored (after compression)
  uint32_t epoch = 0;       // PostgreSQL timeline for pg-wal; 0 where a stream has none yet
  uint64_t start_pos = 0;   // stream position before the first record
  uint64_t end_pos = 0;     // stream position after the last record
  UnixMicros arrival_us = 0;     // ferry's clock when the frame was closed
  UnixMicros first_data_ts = 0;  // first/last data timestamp in the frame, 0 if none
  UnixMicros last_data_ts = 0;
  uint64_t payload_checksum = 0;  // XXH3-64 of the stored payload bytes
  // Non-zero: the payload is sealed (pipeline/cipher.h) under this key, with header bytes
  // 0..63 as additional authenticated data. Flags bit 0 says the same.
  uint16_t key_id = 0;

  size_t frame_size() const { return kFrameHeaderSize + stored_len; }
};

// What a frame is built from: records of one epoch, contiguous with start_pos.
struct FrameInput {
  uint32_t epoch = 0;
  uint64_t start_pos = 0;
  UnixMicros arrival_us = 0;
  absl::Span<const Record> records;
};

// Appends one encoded frame (header + payload) to *out and returns its header.
// zstd_level 0 stores the payload uncompressed; `keys` seals it under their current key.
// Fails only if the payload exceeds kMaxFramePayload (kInvalidArgument) or zstd or OpenSSL
// fails (kInternal).
absl::StatusOr<FrameHeader> EncodeFrame(const FrameInput& input, int zstd_level, std::string* out,
                                        const Keyring* keys = nullptr);

// Parses and checks a header from at least kFrameHeaderSize bytes. kDataLoss on a bad magic,
// header checksum or impossible sizes, with the reason in the message.
absl::StatusOr<FrameHeader> DecodeFrameHeader(absl::string_view bytes);

// Verifies the payload checksum, opens a sealed payload with `keys`, decompresses into
// *scratch and splits it into records. The views point into *scratch, or into `stored` for
// a payload neither sealed nor compressed (scratch may then be null). kDataLoss on any
// mismatch (checksum, authentication, sizes, record bounds, positions not ending at
// header.end_pos); kFailedPrecondition for a sealed payload whose key `keys` lacks.
absl::StatusOr<std::vector<RecordView>> DecodeFramePayload(const FrameHeader& header,
                                                           absl::string_view stored,
                                                           std::string* scratch,
                                                           const Keyring* keys = nullptr);

// XXH3-64, the checksum used by frames, segment headers and digests.
uint64_t Checksum64(absl::string_view bytes);

}  // namespace ferry::pipeline
