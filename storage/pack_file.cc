// The pack file: encoding a chunk and appending it to a pack, reading a chunk back with every
// check, and scanning a pack's intact chunks.
#include "storage/pack_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "pipeline/compress.h"
#include "pipeline/endian.h"
#include "pipeline/frame.h"
#include "pipeline/sha256.h"

namespace ferry::storage {
namespace {

using pipeline::GetLe32;
using pipeline::GetLe64;
using pipeline::PutLe32;
using pipeline::PutLe64;

constexpr char kPackMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'P', 'A', 'K'};
constexpr uint32_t kPackVersion = 1;
constexpr char kChunkMagic[4] = {'F', 'C', 'H', 'K'};
constexpr uint8_t kCodecRaw = 0;
constexpr uint8_t kCodecZstd = 1;
constexpr int kChunkZstdLevel = 3;
constexpr uint8_t kChunkSealed = 1;  // chunk header flags (byte 5); bytes 6..7: key id
constexpr size_t kPackBufferBytes = 8 << 20;  // written to the file in pieces this big

// What a sealed chunk authenticates: its header but for the two checksums (the body's at
// 16..23 is zeroed, the header's at 56.. left out), so its id, sizes and codec are bound to it.
std::array<char, 56> ChunkAad(const char* h) {
  std::array<char, 56> aad;
  std::memcpy(aad.data(), h, aad.size());
  std::memset(aad.data() + 16, 0, 8);
  return aad;
}

bool HeaderChecksumMatches(const char* h) {
  return GetLe64(h + 56) == pipeline::Checksum64(absl::string_view(h, 56));
}

// A chunk being read, for its errors.
struct ChunkSite {
  const std::string& path;
  const ChunkRef& ref;
  absl::string_view file;

  absl::Status Lost(absl::string_view why) const {
    return absl::DataLossError(absl::StrCat(path, " offset ", ref.offset, " (chunk of ", file, "): ", why));
  }
};

// The header's own checks (magic, checksum, flags) and its match with the reference.
absl::Status CheckChunkHeader(const char* h, const ChunkSite& site) {
  if (std::memcmp(h, kChunkMagic, 4) != 0) return site.Lost("bad chunk magic");
  if (!HeaderChecksumMatches(h)) return site.Lost("chunk header checksum mismatch");
  const ChunkRef& c = site.ref;
  if (GetLe32(h + 8) != c.raw_len || GetLe32(h + 12) != c.stored_len || std::memcmp(h + 24, c.id.data(), 32) != 0) {
    return site.Lost("chunk header does not match the manifest");
  }
  const uint8_t flags = static_cast<uint8_t>(h[5]);
  const uint16_t key_id = pipeline::GetLe16(h + 6);
  if ((flags & ~kChunkSealed) != 0 || ((flags & kChunkSealed) != 0) != (key_id != 0)) {
    return site.Lost(absl::StrCat("unknown chunk flags ", flags, " or key id ", key_id));
  }
  return absl::OkStatus();
}

// The raw bytes of a checked chunk: its body opened (when sealed) and decompressed, checked
// against the id.
absl::Status DecodeChunk(const char* h, absl::string_view body, const ChunkSite& site, const pipeline::Keyring* keys,
                         ChunkBuffers* buffers, absl::string_view* data) {
  const ChunkRef& c = site.ref;
  if (const uint16_t key_id = pipeline::GetLe16(h + 6); key_id != 0) {
    if (keys == nullptr || !keys->Has(key_id)) {
      const absl::Status missing = pipeline::MissingKeyError(key_id, keys);
      return absl::FailedPreconditionError(absl::StrCat(site.path, " offset ", c.offset, ": ", missing.message()));
    }
    const std::array<char, 56> aad = ChunkAad(h);
    absl::Status st = keys->Open(key_id, absl::string_view(aad.data(), aad.size()), body, &buffers->opened);
    if (!st.ok()) return site.Lost(st.message());
    body = buffers->opened;
  }
  *data = body;
  if (static_cast<uint8_t>(h[4]) == kCodecZstd) {
    FERRY_RETURN_IF_ERROR(pipeline::DecompressZstd(body, c.raw_len, site.path, &buffers->raw));
    *data = buffers->raw;
  } else if (static_cast<uint8_t>(h[4]) != kCodecRaw) {
    return site.Lost("unknown codec");
  }
  if (pipeline::Sha256(*data) != c.id) return site.Lost("SHA-256 of the chunk does not match its id");
  return absl::OkStatus();
}

}  // namespace

std::string PackFilePath(const std::string& store_dir, uint32_t pack) {
  return absl::StrCat(store_dir, "/packs/", absl::Dec(pack, absl::kZeroPad8), ".pack");
}

absl::Status EncodeChunk(absl::string_view raw, const ChunkId& id, const pipeline::Keyring* keys,
                         ChunkBuffers* buffers, char* h, absl::string_view* body) {
  FERRY_RETURN_IF_ERROR(pipeline::CompressZstd(raw, kChunkZstdLevel, &buffers->compressed));
  uint8_t codec = kCodecZstd;
  *body = buffers->compressed;
  if (buffers->compressed.size() >= raw.size()) {  // incompressible: store as is
    codec = kCodecRaw;
    *body = raw;
  }
  std::memset(h, 0, kChunkHeaderBytes);
  std::memcpy(h, kChunkMagic, 4);
  h[4] = static_cast<char>(codec);
  PutLe32(h + 8, static_cast<uint32_t>(raw.size()));
  PutLe32(h + 12, static_cast<uint32_t>(body->size() + (keys != nullptr ? pipeline::kSealOverhead : 0)));
  std::memcpy(h + 24, id.data(), 32);
  if (keys != nullptr) {
    h[5] = static_cast<char>(kChunkSealed);
    pipeline::PutLe16(h + 6, keys->current_id());
    const std::array<char, 56> aad = ChunkAad(h);
    buffers->sealed.clear();
    FERRY_RETURN_IF_ERROR(
        keys->Seal(keys->current_id(), absl::string_view(aad.data(), aad.size()), *body, &buffers->sealed));
    *body = buffers->sealed;
  }
  PutLe64(h + 16, pipeline::Checksum64(*body));
  PutLe64(h + 56, pipeline::Checksum64(absl::string_view(h, 56)));
  return absl::OkStatus();
}

bool SealedAsNew(const char* header, const pipeline::Keyring* keys) {
  if (keys == nullptr) return true;
  return (header[5] & kChunkSealed) != 0 && pipeline::GetLe16(header + 6) == keys->current_id();
}

PackFds::~PackFds() {
  for (const auto& [pack, fd] : fds_) {
    if (fd >= 0) close(fd);
  }
}

int PackFds::Get(uint32_t pack) {
  auto [it, added] = fds_.try_emplace(pack, -1);
  if (added) it->second = open(PackFilePath(dir_, pack).c_str(), O_RDONLY | O_CLOEXEC);
  return it->second;
}

absl::Status ReadChunk(int fd, const std::string& path, const ChunkRef& ref, absl::string_view file,
                       const pipeline::Keyring* keys, ChunkBuffers* buffers, absl::string_view* data) {
  const ChunkSite site{path, ref, file};
  std::string& stored = buffers->stored;
  stored.resize(kChunkHeaderBytes + ref.stored_len);
  const ssize_t n = pread(fd, stored.data(), stored.size(), ref.offset);
  if (n != static_cast<ssize_t>(stored.size())) return site.Lost("short read (truncated pack?)");
  const char* h = stored.data();
  FERRY_RETURN_IF_ERROR(CheckChunkHeader(h, site));
  absl::string_view body(stored.data() + kChunkHeaderBytes, ref.stored_len);
  if (GetLe64(h + 16) != pipeline::Checksum64(body)) return site.Lost("chunk checksum mismatch");
  if (data == nullptr) return absl::OkStatus();  // a check: as far as the checksums go
  return DecodeChunk(h, body, site, keys, buffers, data);
}

bool ReadChunkHeader(int fd, uint64_t offset, char* header) {
  return fd >= 0 && pread(fd, header, kChunkHeaderBytes, static_cast<off_t>(offset)) ==
                        static_cast<ssize_t>(kChunkHeaderBytes);
}

void ForEachIntactChunk(absl::string_view bytes, uint32_t pack,
                        const std::function<void(const ChunkRef& ref, const char* header)>& fn) {
  if (bytes.size() < kPackHeaderBytes || std::memcmp(bytes.data(), kPackMagic, 8) != 0) return;
  uint64_t at = kPackHeaderBytes;
  while (at + kChunkHeaderBytes <= bytes.size()) {
    const char* h = bytes.data() + at;
    if (std::memcmp(h, kChunkMagic, 4) != 0 || !HeaderChecksumMatches(h)) return;
    ChunkRef ref;
    ref.pack = pack;
    ref.offset = at;
    ref.raw_len = GetLe32(h + 8);
    ref.stored_len = GetLe32(h + 12);
    std::memcpy(ref.id.data(), h + 24, 32);
    if (at + kChunkHeaderBytes + ref.stored_len > bytes.size() ||
        GetLe64(h + 16) != pipeline::Checksum64(absl::string_view(h + kChunkHeaderBytes, ref.stored_len))) {
      return;
    }
    fn(ref, h);
    at += kChunkHeaderBytes + ref.stored_len;
  }
}

absl::StatusOr<std::unique_ptr<PackAppender>> PackAppender::Create(const std::string& path, uint32_t pack) {
  // Packs are written in large buffered pieces and synced once at the end: the POSIX writer
  // is the right tool (io_uring's gain is in many small synced appends).
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<DurableFile> file, OpenDurableFile(path, WriterKind::kPosix, true));
  FERRY_RETURN_IF_ERROR(file->Truncate(0));  // a leftover of a crashed writer, never referenced
  std::unique_ptr<PackAppender> appender(new PackAppender(std::move(file)));
  char h[kPackHeaderBytes] = {};
  std::memcpy(h, kPackMagic, 8);
  PutLe32(h + 8, kPackVersion);
  PutLe32(h + 12, pack);
  appender->buffer_.assign(h, kPackHeaderBytes);
  appender->size_ = kPackHeaderBytes;
  return appender;
}

absl::Status PackAppender::Append(const char* header, absl::string_view body) {
  buffer_.append(header, kChunkHeaderBytes);
  buffer_.append(body.data(), body.size());
  size_ += kChunkHeaderBytes + body.size();
  if (buffer_.size() >= kPackBufferBytes) FERRY_RETURN_IF_ERROR(Flush());
  return absl::OkStatus();
}

absl::Status PackAppender::Flush() {
  if (buffer_.empty()) return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(file_->WriteAt(flushed_, buffer_));
  flushed_ += buffer_.size();
  buffer_.clear();
  return absl::OkStatus();
}

absl::Status PackAppender::Sync() {
  FERRY_RETURN_IF_ERROR(Flush());
  return file_->Sync();
}

}  // namespace ferry::storage
