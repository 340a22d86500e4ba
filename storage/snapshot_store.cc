#include "storage/snapshot_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "pipeline/check.h"
#include "pipeline/compress.h"
#include "pipeline/endian.h"
#include "pipeline/frame.h"
#include "pipeline/sha256.h"
#include "storage/durable_file_internal.h"

namespace ferry::storage {
namespace {

using pipeline::GetLe32;
using pipeline::GetLe64;
using pipeline::PutLe32;
using pipeline::PutLe64;

constexpr char kPackMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'P', 'A', 'K'};
constexpr uint32_t kPackVersion = 1;
constexpr size_t kPackHeaderBytes = 16;
constexpr char kChunkMagic[4] = {'F', 'C', 'H', 'K'};
constexpr size_t kChunkHeaderBytes = 64;
constexpr uint8_t kCodecRaw = 0;
constexpr uint8_t kCodecZstd = 1;
constexpr int kChunkZstdLevel = 3;
constexpr uint8_t kChunkSealed = 1;  // chunk header flags (byte 5); bytes 6..7: key id
constexpr uint64_t kPackTargetBytes = 256ull << 20;  // a new pack once a pack holds this much
constexpr size_t kPackBufferBytes = 8 << 20;          // written to the file in pieces this big
constexpr char kManifestMagic[] = "ferry-snapshot 1";
constexpr char kManifestSuffix[] = ".snap";

// What a sealed chunk authenticates: its header but for the two checksums (the body's at
// 16..23 is zeroed, the header's at 56.. left out), so its id, sizes and codec are bound to it.
std::array<char, 56> ChunkAad(const char* h) {
  std::array<char, 56> aad;
  std::memcpy(aad.data(), h, aad.size());
  std::memset(aad.data() + 16, 0, 8);
  return aad;
}

// Bytes outside printable ASCII, space and '%' become %XX so that every field is one token.
std::string Escape(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f || c == '%') {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

bool Unescape(absl::string_view s, std::string* out) {
  out->clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out->push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size() || !absl::ascii_isxdigit(s[i + 1]) ||
        !absl::ascii_isxdigit(s[i + 2])) {
      return false;
    }
    out->push_back(absl::HexStringToBytes(s.substr(i + 1, 2))[0]);
    i += 2;
  }
  return true;
}

bool ParseChunkId(absl::string_view hex, ChunkId* id) {
  if (hex.size() != 64) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  const std::string bytes = absl::HexStringToBytes(hex);
  std::memcpy(id->data(), bytes.data(), 32);
  return true;
}

std::string IdForTime(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::vector<std::string> ListNames(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) names.push_back(e->d_name);
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

bool ParseOctal(absl::string_view s, uint32_t* v) {
  if (s.empty() || s.size() > 11) return false;
  *v = 0;
  for (char c : s) {
    if (c < '0' || c > '7') return false;
    *v = *v * 8 + (c - '0');
  }
  return true;
}

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

size_t ChunkIdHash::operator()(const ChunkId& id) const {
  uint64_t v;
  std::memcpy(&v, id.data(), 8);
  return static_cast<size_t>(v);
}

std::string ChunkIdHex(const ChunkId& id) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(id.data()), id.size()));
}

std::string SnapshotManifest::Get(const std::string& key) const {
  auto it = meta.find(key);
  return it == meta.end() ? "" : it->second;
}

uint64_t SnapshotManifest::StoredBytes() const {
  uint64_t n = 0;
  for (const auto& e : entries) {
    for (const auto& c : e.chunks) n += c.stored_len + kChunkHeaderBytes;
  }
  return n;
}

uint64_t SnapshotManifest::RawBytes() const {
  uint64_t n = 0;
  for (const auto& e : entries) n += e.size;
  return n;
}

// ---- manifest text ----

std::string SerializeSnapshotManifest(const SnapshotManifest& m) {
  std::string out = absl::StrCat(kManifestMagic, "\nid ", m.id, "\n");
  for (const auto& [key, value] : m.meta) {
    absl::StrAppend(&out, "meta ", Escape(key), " ", Escape(value), "\n");
  }
  for (const auto& e : m.entries) {
    if (e.type == SnapshotEntry::Type::kDir) {
      absl::StrAppend(&out, "dir ", Escape(e.path), " ", absl::StrFormat("%o", e.mode), " ",
                      e.mtime, "\n");
      continue;
    }
    absl::StrAppend(&out, "file ", Escape(e.path), " ", absl::StrFormat("%o", e.mode), " ",
                    e.mtime, " ", e.size, " ", e.chunks.size(), "\n");
    for (const auto& c : e.chunks) {
      absl::StrAppend(&out, "chunk ", ChunkIdHex(c.id), " ", c.pack, " ", c.offset, " ",
                      c.stored_len, " ", c.raw_len, "\n");
    }
  }
  absl::StrAppend(&out, "checksum ", absl::Hex(pipeline::Checksum64(out), absl::kZeroPad16),
                  "\n");
  return out;
}

absl::StatusOr<SnapshotManifest> ParseSnapshotManifest(absl::string_view text,
                                                       absl::string_view what) {
  SnapshotManifest m;
  size_t line_no = 0;
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("snapshot manifest ", what, " line ", line_no, ": ",
                                            why, "; the snapshot is damaged, take a new backup"));
  };
  const size_t sum_at = text.rfind("checksum ");
  if (sum_at == absl::string_view::npos || (sum_at > 0 && text[sum_at - 1] != '\n')) {
    line_no = 0;
    return bad("no checksum line (truncated?)");
  }
  uint64_t want = 0;
  absl::string_view sum_text = absl::StripSuffix(text.substr(sum_at + 9), "\n");
  if (!absl::SimpleHexAtoi(sum_text, &want) ||
      want != pipeline::Checksum64(text.substr(0, sum_at))) {
    return bad("checksum does not match its contents");
  }
  size_t chunks_left = 0;
  std::string scratch;
  for (absl::string_view line : absl::StrSplit(text.substr(0, sum_at), '\n')) {
    ++line_no;
    if (line.empty()) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (line_no == 1) {
      if (line != kManifestMagic) return bad(absl::StrCat("expected \"", kManifestMagic, "\""));
      continue;
    }
    if (chunks_left > 0) {
      ChunkRef c;
      if (f.size() != 6 || f[0] != "chunk" || !ParseChunkId(f[1], &c.id) ||
          !absl::SimpleAtoi(f[2], &c.pack) || !absl::SimpleAtoi(f[3], &c.offset) ||
          !absl::SimpleAtoi(f[4], &c.stored_len) || !absl::SimpleAtoi(f[5], &c.raw_len)) {
        return bad("malformed chunk line");
      }
      m.entries.back().chunks.push_back(c);
      --chunks_left;
      continue;
    }
    if (f[0] == "id" && f.size() == 2) {
      m.id = std::string(f[1]);
    } else if (f[0] == "meta" && f.size() == 3) {
      std::string key, value;
      if (!Unescape(f[1], &key) || !Unescape(f[2], &value)) return bad("bad escape");
      m.meta[key] = value;
    } else if ((f[0] == "dir" && f.size() == 4) || (f[0] == "file" && f.size() == 6)) {
      SnapshotEntry e;
      e.type = f[0] == "dir" ? SnapshotEntry::Type::kDir : SnapshotEntry::Type::kFile;
      if (!Unescape(f[1], &e.path) || !ParseOctal(f[2], &e.mode) ||
          !absl::SimpleAtoi(f[3], &e.mtime)) {
        return bad("malformed entry");
      }
      if (e.type == SnapshotEntry::Type::kFile &&
          (!absl::SimpleAtoi(f[4], &e.size) || !absl::SimpleAtoi(f[5], &chunks_left))) {
        return bad("malformed file entry");
      }
      m.entries.push_back(std::move(e));
    } else {
      return bad(absl::StrCat("unexpected \"", f[0], "\""));
    }
  }
  if (chunks_left > 0) return bad("file lists fewer chunks than it says");
  if (m.id.empty()) return bad("no id");
  for (const auto& e : m.entries) {
    uint64_t sum = 0;
    for (const auto& c : e.chunks) sum += c.raw_len;
    if (sum != e.size) return bad(absl::StrCat("chunks of ", e.path, " do not add up to its size"));
  }
  return m;
}

// ---- store ----

absl::StatusOr<std::unique_ptr<SnapshotStore>> SnapshotStore::Open(
    const std::string& dir, bool writable, std::shared_ptr<const pipeline::Keyring> keys) {
  std::unique_ptr<SnapshotStore> s(new SnapshotStore(dir, std::move(keys)));
  if (writable) {
    for (const std::string& d : {dir, dir + "/packs"}) {
      FERRY_RETURN_IF_ERROR(CreateDirectory(d));
    }
  }
  FERRY_RETURN_IF_ERROR(s->Load());
  return s;
}

absl::Status SnapshotStore::Load() {
  snapshots_.clear();
  chunks_.clear();
  for (const std::string& name : ListNames(dir_)) {
    if (!absl::EndsWith(name, kManifestSuffix)) continue;
    const std::string path = absl::StrCat(dir_, "/", name);
    FERRY_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
    FERRY_ASSIGN_OR_RETURN(SnapshotManifest m, ParseSnapshotManifest(text, path));
    Committed(std::move(m));
  }
  return absl::OkStatus();
}

void SnapshotStore::Committed(SnapshotManifest manifest) {
  for (const auto& e : manifest.entries) {
    // Manifests load oldest first: a later copy (re-sealed under a newer key) wins.
    for (const auto& c : e.chunks) chunks_.insert_or_assign(c.id, c);
  }
  auto at = std::upper_bound(
      snapshots_.begin(), snapshots_.end(), manifest.id,
      [](const std::string& id, const SnapshotManifest& m) { return id < m.id; });
  snapshots_.insert(at, std::move(manifest));
}

const SnapshotManifest* SnapshotStore::Find(absl::string_view id) const {
  for (const auto& m : snapshots_) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

std::string SnapshotStore::PackPath(uint32_t pack) const {
  return absl::StrCat(dir_, "/packs/", absl::Dec(pack, absl::kZeroPad8), ".pack");
}

std::vector<uint32_t> SnapshotStore::PackNumbers() const {
  std::vector<uint32_t> packs;
  for (const std::string& name : ListNames(dir_ + "/packs")) {
    uint32_t n;
    if (absl::EndsWith(name, ".pack") &&
        absl::SimpleAtoi(absl::StripSuffix(name, ".pack"), &n)) {
      packs.push_back(n);
    }
  }
  return packs;
}

uint64_t SnapshotStore::PackBytes() const {
  uint64_t total = 0;
  for (uint32_t p : PackNumbers()) {
    struct stat st;
    if (stat(PackPath(p).c_str(), &st) == 0) total += st.st_size;
  }
  return total;
}

absl::StatusOr<int> SnapshotStore::Lock() const {
  const std::string path = dir_ + "/LOCK";
  FERRY_ASSIGN_OR_RETURN(const int fd, OpenForWrite(path, true));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "another backup or retention run holds ", path, "; wait for it to finish"));
    }
    return ErrnoStatus("lock", path, err);
  }
  return fd;
}

absl::StatusOr<std::unique_ptr<SnapshotWriter>> SnapshotStore::Begin(
    int64_t start_unix_seconds, std::map<std::string, std::string> meta) {
  FERRY_ASSIGN_OR_RETURN(int fd, Lock());
  // Another process may have committed snapshots since we loaded: dedup against them too.
  absl::Status loaded = Load();
  if (!loaded.ok()) {
    close(fd);
    return loaded;
  }
  std::vector<uint32_t> packs = PackNumbers();
  const uint32_t first_pack = packs.empty() ? 1 : packs.back() + 1;
  std::unique_ptr<SnapshotWriter> w(new SnapshotWriter(this, fd, first_pack));
  std::string id = IdForTime(start_unix_seconds);
  for (int n = 1; Find(id) != nullptr; ++n) id = absl::StrCat(IdForTime(start_unix_seconds), "-", n);
  w->manifest_.id = id;
  w->manifest_.meta = std::move(meta);
  return w;
}

absl::Status SnapshotStore::ReadFile(
    const SnapshotEntry& entry, const std::function<absl::Status(absl::string_view)>& sink) const {
  return ReadChunks(entry, &sink);
}

absl::Status SnapshotStore::CheckStored(const SnapshotEntry& entry) const { return ReadChunks(entry, nullptr); }

absl::Status SnapshotStore::ReadChunks(const SnapshotEntry& entry,
                                       const std::function<absl::Status(absl::string_view)>* sink) const {
  std::map<uint32_t, int> fds;
  struct Closer {
    std::map<uint32_t, int>* fds;
    ~Closer() {
      for (auto& [p, fd] : *fds) close(fd);
    }
  } closer{&fds};
  std::string stored, raw, opened;
  for (const ChunkRef& c : entry.chunks) {
    const std::string path = PackPath(c.pack);
    auto it = fds.find(c.pack);
    if (it == fds.end()) {
      int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        return absl::DataLossError(absl::StrCat("chunk ", ChunkIdHex(c.id), " of ", entry.path,
                                                ": cannot open ", path, ": ", strerror(errno)));
      }
      it = fds.emplace(c.pack, fd).first;
    }
    auto where = [&](absl::string_view why) {
      return absl::DataLossError(absl::StrCat(path, " offset ", c.offset, " (chunk of ",
                                              entry.path, "): ", why));
    };
    stored.resize(kChunkHeaderBytes + c.stored_len);
    const ssize_t n = pread(it->second, stored.data(), stored.size(), c.offset);
    if (n != static_cast<ssize_t>(stored.size())) return where("short read (truncated pack?)");
    const char* h = stored.data();
    if (std::memcmp(h, kChunkMagic, 4) != 0) return where("bad chunk magic");
    if (GetLe64(h + 56) != pipeline::Checksum64(absl::string_view(h, 56))) {
      return where("chunk header checksum mismatch");
    }
    if (GetLe32(h + 8) != c.raw_len || GetLe32(h + 12) != c.stored_len ||
        std::memcmp(h + 24, c.id.data(), 32) != 0) {
      return where("chunk header does not match the manifest");
    }
    const uint8_t flags = static_cast<uint8_t>(h[5]);
    const uint16_t key_id = pipeline::GetLe16(h + 6);
    if ((flags & ~kChunkSealed) != 0 || ((flags & kChunkSealed) != 0) != (key_id != 0)) {
      return where(absl::StrCat("unknown chunk flags ", flags, " or key id ", key_id));
    }
    absl::string_view body(stored.data() + kChunkHeaderBytes, c.stored_len);
    if (GetLe64(h + 16) != pipeline::Checksum64(body)) return where("chunk checksum mismatch");
    if (sink == nullptr) continue;  // CheckStored: as far as the checksums go
    if (key_id != 0) {
      if (keys_ == nullptr || !keys_->Has(key_id)) {
        const absl::Status missing = pipeline::MissingKeyError(key_id, keys_.get());
        return absl::FailedPreconditionError(absl::StrCat(path, " offset ", c.offset, ": ", missing.message()));
      }
      const std::array<char, 56> aad = ChunkAad(h);
      absl::Status st = keys_->Open(key_id, absl::string_view(aad.data(), aad.size()), body, &opened);
      if (!st.ok()) return where(st.message());
      body = opened;
    }
    absl::string_view data = body;
    if (static_cast<uint8_t>(h[4]) == kCodecZstd) {
      FERRY_RETURN_IF_ERROR(pipeline::DecompressZstd(body, c.raw_len, path, &raw));
      data = raw;
    } else if (static_cast<uint8_t>(h[4]) != kCodecRaw) {
      return where("unknown codec");
    }
    if (pipeline::Sha256(data) != c.id) return where("SHA-256 of the chunk does not match its id");
    FERRY_RETURN_IF_ERROR((*sink)(data));
  }
  return absl::OkStatus();
}

absl::Status SnapshotStore::Remove(absl::string_view id) {
  FERRY_ASSIGN_OR_RETURN(int fd, Lock());
  FdCloser closer{fd};
  const std::string path = absl::StrCat(dir_, "/", id, kManifestSuffix);
  if (unlink(path.c_str()) != 0) return ErrnoStatus("remove", path, errno);
  FERRY_RETURN_IF_ERROR(SyncDirectory(dir_));
  return Load();
}

absl::StatusOr<std::vector<std::string>> SnapshotStore::CollectGarbage(bool dry_run) {
  FERRY_ASSIGN_OR_RETURN(int fd, Lock());
  FdCloser closer{fd};
  FERRY_RETURN_IF_ERROR(Load());
  std::set<uint32_t> used;
  for (const auto& m : snapshots_) {
    for (const auto& e : m.entries) {
      for (const auto& c : e.chunks) used.insert(c.pack);
    }
  }
  std::vector<std::string> gone;
  for (uint32_t p : PackNumbers()) {
    if (used.count(p) > 0) continue;
    const std::string path = PackPath(p);
    if (!dry_run && unlink(path.c_str()) != 0) return ErrnoStatus("remove", path, errno);
    gone.push_back(path);
  }
  if (!dry_run && !gone.empty()) FERRY_RETURN_IF_ERROR(SyncDirectory(dir_ + "/packs"));
  return gone;
}

// ---- writer ----

SnapshotWriter::SnapshotWriter(SnapshotStore* store, int lock_fd, uint32_t first_pack)
    : store_(store), lock_fd_(lock_fd), pack_(first_pack) {}

SnapshotWriter::~SnapshotWriter() {
  if (lock_fd_ >= 0) close(lock_fd_);
  for (const auto& [pack, fd] : pack_fds_) {
    if (fd >= 0) close(fd);
  }
}

absl::Status SnapshotWriter::AddDir(absl::string_view path, uint32_t mode, int64_t mtime) {
  FERRY_CHECK(!in_file_);
  SnapshotEntry e;
  e.type = SnapshotEntry::Type::kDir;
  e.path = std::string(path);
  e.mode = mode;
  e.mtime = mtime;
  manifest_.entries.push_back(std::move(e));
  return absl::OkStatus();
}

absl::Status SnapshotWriter::BeginFile(absl::string_view path, uint32_t mode, int64_t mtime) {
  FERRY_CHECK(!in_file_);
  SnapshotEntry e;
  e.path = std::string(path);
  e.mode = mode;
  e.mtime = mtime;
  manifest_.entries.push_back(std::move(e));
  in_file_ = true;
  return absl::OkStatus();
}

absl::Status SnapshotWriter::Write(absl::string_view bytes) {
  FERRY_CHECK(in_file_);
  chunker_.Add(bytes);
  absl::string_view chunk;
  while (chunker_.Next(false, &chunk)) {
    ChunkRef ref;
    FERRY_RETURN_IF_ERROR(PutChunk(chunk, &ref));
    manifest_.entries.back().chunks.push_back(ref);
  }
  return absl::OkStatus();
}

absl::Status SnapshotWriter::EndFile() {
  FERRY_CHECK(in_file_);
  absl::string_view chunk;
  SnapshotEntry& e = manifest_.entries.back();
  while (chunker_.Next(true, &chunk)) {
    ChunkRef ref;
    FERRY_RETURN_IF_ERROR(PutChunk(chunk, &ref));
    e.chunks.push_back(ref);
  }
  e.size = 0;
  for (const auto& c : e.chunks) e.size += c.raw_len;
  in_file_ = false;
  return absl::OkStatus();
}

absl::Status SnapshotWriter::PutChunk(absl::string_view raw, ChunkRef* ref) {
  stats_.raw_bytes += raw.size();
  ++stats_.chunks;
  const ChunkId id = pipeline::Sha256(raw);
  if (const ChunkRef* have = Reusable(id)) {
    *ref = *have;
    return absl::OkStatus();
  }
  if (pack_file_ == nullptr) FERRY_RETURN_IF_ERROR(OpenPack());
  FERRY_RETURN_IF_ERROR(pipeline::CompressZstd(raw, kChunkZstdLevel, &compressed_));
  uint8_t codec = kCodecZstd;
  absl::string_view body = compressed_;
  if (compressed_.size() >= raw.size()) {  // incompressible: store as is
    codec = kCodecRaw;
    body = raw;
  }
  const pipeline::Keyring* keys = store_->keys_.get();
  char h[kChunkHeaderBytes] = {};
  std::memcpy(h, kChunkMagic, 4);
  h[4] = static_cast<char>(codec);
  PutLe32(h + 8, static_cast<uint32_t>(raw.size()));
  PutLe32(h + 12, static_cast<uint32_t>(body.size() + (keys != nullptr ? pipeline::kSealOverhead : 0)));
  std::memcpy(h + 24, id.data(), 32);
  if (keys != nullptr) {
    h[5] = static_cast<char>(kChunkSealed);
    pipeline::PutLe16(h + 6, keys->current_id());
    const std::array<char, 56> aad = ChunkAad(h);
    sealed_.clear();
    FERRY_RETURN_IF_ERROR(keys->Seal(keys->current_id(), absl::string_view(aad.data(), aad.size()), body, &sealed_));
    body = sealed_;
  }
  PutLe64(h + 16, pipeline::Checksum64(body));
  PutLe64(h + 56, pipeline::Checksum64(absl::string_view(h, 56)));
  ref->id = id;
  ref->pack = pack_;
  ref->offset = pack_size_;
  ref->stored_len = static_cast<uint32_t>(body.size());
  ref->raw_len = static_cast<uint32_t>(raw.size());
  pack_buffer_.append(h, kChunkHeaderBytes);
  pack_buffer_.append(body.data(), body.size());
  pack_size_ += kChunkHeaderBytes + body.size();
  written_.emplace(id, *ref);
  ++stats_.new_chunks;
  stats_.new_stored_bytes += kChunkHeaderBytes + body.size();
  if (pack_buffer_.size() >= kPackBufferBytes) FERRY_RETURN_IF_ERROR(FlushPackBuffer());
  if (pack_size_ >= kPackTargetBytes) {
    // Seal this pack (synced now, so Commit only syncs the last one) and start the next.
    FERRY_RETURN_IF_ERROR(FlushPackBuffer());
    FERRY_RETURN_IF_ERROR(pack_file_->Sync());
    pack_file_.reset();
    ++pack_;
  }
  return absl::OkStatus();
}

absl::Status SnapshotWriter::OpenPack() {
  // Packs are written in large buffered pieces and synced once at the end: the POSIX writer
  // is the right tool (io_uring's gain is in many small synced appends).
  FERRY_ASSIGN_OR_RETURN(pack_file_, OpenDurableFile(store_->PackPath(pack_), WriterKind::kPosix, true));
  FERRY_RETURN_IF_ERROR(pack_file_->Truncate(0));  // a leftover of a crashed writer, never referenced
  packs_written_.push_back(pack_);
  char h[kPackHeaderBytes] = {};
  std::memcpy(h, kPackMagic, 8);
  PutLe32(h + 8, kPackVersion);
  PutLe32(h + 12, pack_);
  pack_buffer_.assign(h, kPackHeaderBytes);
  pack_size_ = kPackHeaderBytes;
  flushed_ = 0;
  return absl::OkStatus();
}

absl::Status SnapshotWriter::FlushPackBuffer() {
  if (pack_file_ == nullptr || pack_buffer_.empty()) return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(pack_file_->WriteAt(flushed_, pack_buffer_));
  flushed_ += pack_buffer_.size();
  pack_buffer_.clear();
  return absl::OkStatus();
}

absl::Status SnapshotWriter::ImportChunk(absl::string_view raw) {
  ChunkRef ref;
  return PutChunk(raw, &ref);
}

bool SnapshotWriter::HasChunk(const ChunkId& id) const { return Reusable(id) != nullptr; }

const ChunkRef* SnapshotWriter::Reusable(const ChunkId& id) const {
  if (auto it = written_.find(id); it != written_.end()) return &it->second;
  auto it = store_->chunks_.find(id);
  if (it == store_->chunks_.end()) return nullptr;
  const pipeline::Keyring* keys = store_->keys_.get();
  if (keys == nullptr) return &it->second;
  // A store with keys writes again what an older snapshot holds in the clear or under an
  // older key, so that retention can remove those copies (and the old key) in time.
  // (One descriptor per pack for the writer's life: a backup looks up every chunk it has.)
  auto fd = pack_fds_.find(it->second.pack);
  if (fd == pack_fds_.end()) {
    fd = pack_fds_.emplace(it->second.pack, open(store_->PackPath(it->second.pack).c_str(), O_RDONLY | O_CLOEXEC)).first;
  }
  char h[kChunkHeaderBytes];
  // Unreadable: written again, which is never wrong.
  const bool read = fd->second >= 0 && pread(fd->second, h, sizeof(h), static_cast<off_t>(it->second.offset)) == sizeof(h);
  return read && SealedAsNew(h) ? &it->second : nullptr;
}

bool SnapshotWriter::SealedAsNew(const char* header) const {
  const pipeline::Keyring* keys = store_->keys_.get();
  if (keys == nullptr) return true;
  return (header[5] & kChunkSealed) != 0 && pipeline::GetLe16(header + 6) == keys->current_id();
}

absl::Status SnapshotWriter::SyncPacks() {
  if (pack_file_ == nullptr) return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(FlushPackBuffer());
  FERRY_RETURN_IF_ERROR(pack_file_->Sync());
  if (!packs_written_.empty()) FERRY_RETURN_IF_ERROR(SyncDirectory(store_->dir() + "/packs"));
  return absl::OkStatus();
}

absl::Status SnapshotWriter::AdoptUnreferencedChunks() {
  for (uint32_t pack : store_->PackNumbers()) {
    if (pack >= pack_) continue;  // this writer's own
    absl::StatusOr<std::string> read = ReadWholeFile(store_->PackPath(pack));
    if (!read.ok()) return read.status();
    const std::string& bytes = *read;
    if (bytes.size() < kPackHeaderBytes || std::memcmp(bytes.data(), kPackMagic, 8) != 0) continue;
    uint64_t at = kPackHeaderBytes;
    while (at + kChunkHeaderBytes <= bytes.size()) {
      const char* h = bytes.data() + at;
      if (std::memcmp(h, kChunkMagic, 4) != 0 || GetLe64(h + 56) != pipeline::Checksum64(absl::string_view(h, 56))) {
        break;
      }
      ChunkRef ref;
      ref.pack = pack;
      ref.offset = at;
      ref.raw_len = GetLe32(h + 8);
      ref.stored_len = GetLe32(h + 12);
      std::memcpy(ref.id.data(), h + 24, 32);
      if (at + kChunkHeaderBytes + ref.stored_len > bytes.size() ||
          GetLe64(h + 16) != pipeline::Checksum64(absl::string_view(h + kChunkHeaderBytes, ref.stored_len))) {
        break;
      }
      // Only what a new chunk would be (sealed under the current key, when there are keys).
      if (store_->chunks_.count(ref.id) == 0 && SealedAsNew(h)) written_.emplace(ref.id, ref);
      at += kChunkHeaderBytes + ref.stored_len;
    }
  }
  return absl::OkStatus();
}

std::vector<ChunkRef> SnapshotWriter::Leftovers() const {
  std::vector<ChunkRef> out;
  for (const auto& [id, ref] : written_) {
    if (store_->chunks_.count(id) == 0) out.push_back(ref);
  }
  return out;
}

void SnapshotWriter::Adopt(const std::vector<ChunkRef>& chunks) {
  for (const ChunkRef& ref : chunks) {
    if (store_->chunks_.count(ref.id) == 0) written_.emplace(ref.id, ref);
  }
}

absl::StatusOr<SnapshotManifest> SnapshotWriter::CommitImported(SnapshotManifest manifest) {
  for (SnapshotEntry& e : manifest.entries) {
    for (ChunkRef& c : e.chunks) {
      if (const ChunkRef* have = Reusable(c.id)) {
        c = *have;
      } else {
        return absl::NotFoundError(absl::StrCat("snapshot ", manifest.id, ": chunk ", ChunkIdHex(c.id), " of ", e.path,
                                                " is not in the store yet"));
      }
    }
  }
  manifest_ = std::move(manifest);
  return Commit();
}

absl::StatusOr<SnapshotManifest> SnapshotWriter::Commit() {
  FERRY_CHECK(!in_file_);
  FERRY_CHECK(lock_fd_ >= 0);
  if (pack_file_ != nullptr) {
    FERRY_RETURN_IF_ERROR(FlushPackBuffer());
    FERRY_RETURN_IF_ERROR(pack_file_->Sync());
    pack_file_.reset();
  }
  // Packs (and their directory entries) are durable before the manifest that names them
  // appears: a crash in between leaves unreferenced chunks, never a dangling manifest.
  if (!packs_written_.empty()) FERRY_RETURN_IF_ERROR(SyncDirectory(store_->dir() + "/packs"));
  FERRY_RETURN_IF_ERROR(WriteFileAtomically(store_->dir(), manifest_.id + kManifestSuffix,
                                            SerializeSnapshotManifest(manifest_)));
  store_->Committed(manifest_);
  close(lock_fd_);
  lock_fd_ = -1;
  return manifest_;
}

}  // namespace ferry::storage
