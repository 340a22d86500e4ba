#include "ingest/pg/incremental_backup.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "pipeline/check.h"
#include "pipeline/sha256.h"

namespace ferry::ingest::pg {
namespace {

constexpr absl::string_view kIncrementalPrefix = "INCREMENTAL.";

uint32_t GetLe32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);  // the server writes the header in its own byte order: x86-64's
  return v;
}

// A path as the manifest writes it: "Path" when it needs no escaping, else "Encoded-Path".
std::string ManifestPathField(const std::string& path) {
  const bool plain = std::all_of(path.begin(), path.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f && c != '"' && c != '\\';
  });
  if (plain) return absl::StrCat("\"Path\": \"", path, "\"");
  return absl::StrCat("\"Encoded-Path\": \"", absl::BytesToHexString(path), "\"");
}

}  // namespace

absl::StatusOr<IncrementalHeader> ParseIncrementalHeader(absl::string_view file, uint64_t file_bytes,
                                                         const std::string& path) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("incremental backup file ", path, ": ", why));
  };
  if (file.size() < 12) return bad("shorter than its header");
  if (GetLe32(file.data()) != kIncrementalMagic) return bad("bad magic number");
  const uint32_t count = GetLe32(file.data() + 4);
  IncrementalHeader h;
  // 17.0 to 17.2 can write a truncation length past the segment after a VACUUM truncated a
  // relation of more than 1 GiB; it means "none of this segment's blocks is cut", as later
  // releases (and pg_combinebackup) read it.
  h.truncation_blocks = std::min(GetLe32(file.data() + 8), kPgSegmentBlocks);
  if (count > kPgSegmentBlocks) return bad("block count beyond a segment");
  size_t header = 12 + size_t{4} * count;
  if (file.size() < header) return bad("shorter than its block list");
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t b = GetLe32(file.data() + 12 + 4 * i);
    if (b >= kPgSegmentBlocks) return bad(absl::StrCat("block ", b, " beyond a segment"));
    h.blocks.push_back(b);
  }
  // With blocks, the header is padded so that they start at a block boundary.
  if (count > 0 && header % kPgBlockBytes != 0) header += kPgBlockBytes - header % kPgBlockBytes;
  h.data_offset = header;
  if (file_bytes != header + uint64_t{count} * kPgBlockBytes) {
    return bad(absl::StrCat(file_bytes, " bytes, but its header lists ", count, " blocks"));
  }
  return h;
}

absl::Status IncrementalCombiner::AddDir(absl::string_view path, uint32_t mode, int64_t mtime) {
  return out_->AddDir(path, mode, mtime);
}

absl::Status IncrementalCombiner::BeginFile(absl::string_view path, uint32_t mode, int64_t mtime) {
  path_ = std::string(path);
  file_mode_ = mode;
  mtime_ = mtime;
  buffer_.clear();
  spilled_.reset();
  const size_t slash = path.rfind('/');
  const absl::string_view name = slash == absl::string_view::npos ? path : path.substr(slash + 1);
  if (path == "backup_manifest") {
    mode_ = Mode::kServerManifest;
  } else if (path == "backup_label") {
    mode_ = Mode::kLabel;
  } else if (absl::StartsWith(name, kIncrementalPrefix)) {
    mode_ = Mode::kIncrement;
  } else {
    mode_ = Mode::kPass;
    return BeginOut(path_, mode, mtime);
  }
  return absl::OkStatus();
}

absl::Status IncrementalCombiner::Write(absl::string_view bytes) {
  switch (mode_) {
    case Mode::kPass:
      return Emit(bytes);
    case Mode::kServerManifest:
      server_manifest_.append(bytes.data(), bytes.size());
      return absl::OkStatus();
    case Mode::kLabel:
      buffer_.append(bytes.data(), bytes.size());
      return absl::OkStatus();
    case Mode::kIncrement:
      // The changed blocks of one 1 GiB segment: in memory up to in_memory_bytes_.
      if (spilled_ == nullptr && buffer_.size() + bytes.size() <= in_memory_bytes_) {
        buffer_.append(bytes.data(), bytes.size());
        return absl::OkStatus();
      }
      if (spilled_ == nullptr) {
        FERRY_ASSIGN_OR_RETURN(spilled_, SpillFile::Create());
        FERRY_RETURN_IF_ERROR(spilled_->AppendRaw(buffer_));
        buffer_.clear();
        buffer_.shrink_to_fit();
      }
      return spilled_->AppendRaw(bytes);
  }
  return absl::OkStatus();
}

absl::Status IncrementalCombiner::EndFile() {
  switch (mode_) {
    case Mode::kPass:
      return EndOut();
    case Mode::kServerManifest:
      return absl::OkStatus();
    case Mode::kLabel: {
      // What remains is the label of a full backup taken at the incremental's start.
      std::string label;
      for (absl::string_view line : absl::StrSplit(buffer_, absl::ByChar('\n'), absl::SkipEmpty())) {
        if (!absl::StartsWith(line, "INCREMENTAL FROM ")) absl::StrAppend(&label, line, "\n");
      }
      FERRY_RETURN_IF_ERROR(BeginOut(path_, file_mode_, mtime_));
      FERRY_RETURN_IF_ERROR(Emit(label));
      return EndOut();
    }
    case Mode::kIncrement:
      return Rebuild();
  }
  return absl::OkStatus();
}

// pg_combinebackup's rule with one prior full copy: the file is max(truncation length, last
// changed block + 1) blocks long; each block comes from the increment when it changed, else
// from the prior copy when it is before the truncation length and the copy has it, else it
// is zeros (extended but never written).
absl::Status IncrementalCombiner::Rebuild() {
  // The header from the file's first bytes; a changed block's data from memory or the spill.
  std::string head_bytes, spilled_block;
  absl::string_view head = buffer_;
  const uint64_t file_bytes = spilled_ != nullptr ? spilled_->bytes() : buffer_.size();
  if (spilled_ != nullptr) {
    FERRY_RETURN_IF_ERROR(
        spilled_->ReadAt(0, static_cast<size_t>(std::min<uint64_t>(file_bytes, kIncrementalHeaderMaxBytes)), &head_bytes));
    head = head_bytes;
  }
  FERRY_ASSIGN_OR_RETURN(const IncrementalHeader h, ParseIncrementalHeader(head, file_bytes, path_));
  auto changed_block = [&](size_t i, absl::string_view* block) -> absl::Status {
    const uint64_t at = h.data_offset + uint64_t{i} * kPgBlockBytes;
    if (spilled_ == nullptr) {
      *block = absl::string_view(buffer_).substr(static_cast<size_t>(at), kPgBlockBytes);
      return absl::OkStatus();
    }
    FERRY_RETURN_IF_ERROR(spilled_->ReadAt(at, kPgBlockBytes, &spilled_block));
    *block = spilled_block;
    return absl::OkStatus();
  };
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path_.substr(0, slash + 1);
  const std::string real = dir + path_.substr(dir.size() + kIncrementalPrefix.size());
  uint32_t length = h.truncation_blocks;
  std::vector<int64_t> changed_at;  // block -> index of its data in the increment, or -1
  for (uint32_t b : h.blocks) length = std::max(length, b + 1);
  changed_at.assign(length, -1);
  for (size_t i = 0; i < h.blocks.size(); ++i) changed_at[h.blocks[i]] = static_cast<int64_t>(i);
  changed_blocks_ += h.blocks.size();
  ++rebuilt_files_;

  static const std::string kZeros(kPgBlockBytes, '\0');
  uint32_t next = 0;  // the next block to write
  auto emit_block = [&](const char* prior_block) -> absl::Status {
    const int64_t i = changed_at[next];
    absl::string_view block;
    if (i >= 0) {
      FERRY_RETURN_IF_ERROR(changed_block(static_cast<size_t>(i), &block));
    } else if (prior_block != nullptr && next < h.truncation_blocks) {
      block = absl::string_view(prior_block, kPgBlockBytes);
    } else {
      block = kZeros;
    }
    ++next;
    return Emit(block);
  };
  FERRY_RETURN_IF_ERROR(BeginOut(real, file_mode_, mtime_));
  std::string partial;  // a prior block cut between two reads
  absl::Status read = prior_(real, [&](absl::string_view bytes) -> absl::Status {
    while (!bytes.empty()) {
      if (next >= length) return absl::OkStatus();  // the rest was truncated away
      if (partial.empty() && bytes.size() >= kPgBlockBytes) {
        FERRY_RETURN_IF_ERROR(emit_block(bytes.data()));
        bytes.remove_prefix(kPgBlockBytes);
        continue;
      }
      const size_t n = std::min(kPgBlockBytes - partial.size(), bytes.size());
      partial.append(bytes.data(), n);
      bytes.remove_prefix(n);
      if (partial.size() == kPgBlockBytes) {
        FERRY_RETURN_IF_ERROR(emit_block(partial.data()));
        partial.clear();
      }
    }
    return absl::OkStatus();
  });
  if (absl::IsNotFound(read)) {
    return absl::DataLossError(absl::StrCat("the server sent an increment of ", real,
                                            ", but the prior backup has no such file to apply it to"));
  }
  FERRY_RETURN_IF_ERROR(read);
  // A partial last block of the prior copy (a file being extended while it was backed up)
  // counts as absent, as pg_combinebackup counts it.
  while (next < length) FERRY_RETURN_IF_ERROR(emit_block(nullptr));
  spilled_.reset();
  return EndOut();
}

absl::Status IncrementalCombiner::BeginOut(const std::string& path, uint32_t mode, int64_t mtime) {
  out_path_ = path;
  mtime_ = mtime;
  digester_ = FileDigester();
  return out_->BeginFile(path, mode, mtime);
}

absl::Status IncrementalCombiner::Emit(absl::string_view bytes) {
  digester_.Update(bytes);
  return out_->Write(bytes);
}

absl::Status IncrementalCombiner::EndOut() {
  stored_[out_path_] = {digester_.Finish(), mtime_};
  return out_->EndFile();
}

absl::Status IncrementalCombiner::Finish() {
  if (server_manifest_.empty()) return absl::DataLossError("the incremental backup ended without its backup_manifest");
  FERRY_ASSIGN_OR_RETURN(const std::string manifest, RewriteBackupManifest(server_manifest_, stored_));
  FERRY_RETURN_IF_ERROR(out_->BeginFile("backup_manifest", 0600, 0));
  FERRY_RETURN_IF_ERROR(out_->Write(manifest));
  return out_->EndFile();
}

absl::StatusOr<std::string> RewriteBackupManifest(absl::string_view server_manifest,
                                                  const std::map<std::string, std::pair<FileDigest, int64_t>>& files) {
  // Keep the server's text around the file list: its header (version, system identifier)
  // and its WAL-Ranges; only the list and the checksum are new.
  constexpr absl::string_view kFiles = "\"Files\": [";
  const size_t files_at = server_manifest.find(kFiles);
  const size_t ranges_at = server_manifest.find("\"WAL-Ranges\"");
  const size_t sum_at = server_manifest.rfind("\"Manifest-Checksum\"");
  const size_t list_end = ranges_at == absl::string_view::npos ? ranges_at : server_manifest.rfind(']', ranges_at);
  if (files_at == absl::string_view::npos || list_end == absl::string_view::npos || sum_at == absl::string_view::npos ||
      list_end < files_at || sum_at < ranges_at) {
    return absl::DataLossError("the server's backup_manifest does not have the expected layout");
  }
  std::string text(server_manifest.substr(0, files_at + kFiles.size()));
  bool first = true;
  for (const auto& [path, file] : files) {
    const uint32_t c = file.first.crc32c;
    const char le[4] = {static_cast<char>(c), static_cast<char>(c >> 8), static_cast<char>(c >> 16),
                        static_cast<char>(c >> 24)};
    absl::StrAppend(&text, first ? "\n" : ",\n", "{ ", ManifestPathField(path), ", \"Size\": ", file.first.size,
                    ", \"Last-Modified\": \"",
                    absl::FormatTime("%Y-%m-%d %H:%M:%S GMT", absl::FromUnixSeconds(file.second), absl::UTCTimeZone()),
                    "\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"",
                    absl::BytesToHexString(absl::string_view(le, 4)), "\" }");
    first = false;
  }
  absl::StrAppend(&text, "\n", server_manifest.substr(list_end, sum_at - list_end));
  const pipeline::Sha256Digest sum = pipeline::Sha256(text);
  absl::StrAppend(&text, "\"Manifest-Checksum\": \"",
                  absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(sum.data()), sum.size())),
                  "\"}\n");
  std::map<std::string, FileDigest> digests;
  for (const auto& [path, file] : files) digests[path] = file.first;
  FERRY_RETURN_IF_ERROR(CheckBackupManifest(text, digests));  // the same check as the server's
  return text;
}

}  // namespace ferry::ingest::pg
