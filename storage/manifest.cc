// The snapshot manifest: its text form (written by SerializeSnapshotManifest, read strictly
// by ParseSnapshotManifest) and the sums over its entries.
#include "storage/manifest.h"

#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "pipeline/frame.h"
#include "storage/pack_file.h"

namespace ferry::storage {
namespace {

constexpr char kManifestMagic[] = "ferry-snapshot 1";

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

bool ParseOctal(absl::string_view s, uint32_t* v) {
  if (s.empty() || s.size() > 11) return false;
  *v = 0;
  for (char c : s) {
    if (c < '0' || c > '7') return false;
    *v = *v * 8 + (c - '0');
  }
  return true;
}

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

}  // namespace ferry::storage
