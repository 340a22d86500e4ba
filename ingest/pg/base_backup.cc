#include "ingest/pg/base_backup.h"

#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "ingest/pg/backup_manifest.h"
#include "pipeline/check.h"
#include "pipeline/endian.h"

namespace ferry::ingest::pg {
namespace {

constexpr size_t kBlock = 512;

// A numeric ustar field: octal digits (space or NUL terminated), or base-256 when the first
// byte's high bit is set (GNU extension, for sizes over 8 GiB).
bool ParseTarNumber(const char* field, size_t len, uint64_t* out) {
  *out = 0;
  if (static_cast<unsigned char>(field[0]) & 0x80) {
    for (size_t i = 1; i < len; ++i) *out = (*out << 8) | static_cast<unsigned char>(field[i]);
    return true;
  }
  size_t i = 0;
  while (i < len && field[i] == ' ') ++i;
  bool any = false;
  for (; i < len && field[i] >= '0' && field[i] <= '7'; ++i) {
    *out = *out * 8 + (field[i] - '0');
    any = true;
  }
  return any && (i == len || field[i] == ' ' || field[i] == '\0');
}

std::string CString(const char* p, size_t max) { return std::string(p, strnlen(p, max)); }

}  // namespace

absl::Status TarUnpacker::StartMember() {
  const char* h = header_.data();
  bool all_zero = true;
  for (char c : header_) all_zero = all_zero && c == 0;
  if (all_zero) {
    if (++zero_blocks_ == 2) ended_ = true;
    return absl::OkStatus();
  }
  if (zero_blocks_ > 0) return absl::DataLossError("base backup tar: data after an empty block");
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("base backup tar: ", why, " in the header of \"",
                                            CString(h, 100), "\""));
  };
  // Header checksum: the sum of all header bytes with the checksum field read as spaces.
  uint64_t want = 0;
  if (!ParseTarNumber(h + 148, 8, &want)) return bad("bad checksum field");
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
  }
  if (sum != want) return bad("header checksum mismatch");
  std::string path = CString(h, 100);
  if (std::memcmp(h + 257, "ustar", 5) == 0) {
    const std::string prefix = CString(h + 345, 155);
    if (!prefix.empty()) path = absl::StrCat(prefix, "/", path);
  }
  path = std::string(absl::StripSuffix(path, "/"));
  if (path.empty() || path[0] == '/' || absl::StrContains(path, "..")) {
    return bad("unsafe path");
  }
  uint64_t mode = 0, size = 0, mtime = 0;
  if (!ParseTarNumber(h + 100, 8, &mode) || !ParseTarNumber(h + 124, 12, &size) ||
      !ParseTarNumber(h + 136, 12, &mtime)) {
    return bad("bad number");
  }
  const char type = h[156];
  if (type == '5') {
    return sink_->AddDir(path, static_cast<uint32_t>(mode & 07777), static_cast<int64_t>(mtime));
  }
  if (type != '0' && type != '\0') {
    return absl::FailedPreconditionError(absl::StrCat(
        "base backup has \"", path, "\" of tar type '", std::string(1, type),
        "' (a symlink?); ferry stores regular files and directories only"));
  }
  FERRY_RETURN_IF_ERROR(
      sink_->BeginFile(path, static_cast<uint32_t>(mode & 07777), static_cast<int64_t>(mtime)));
  path_ = path;
  remaining_ = size;
  padding_ = (kBlock - size % kBlock) % kBlock;
  ++files_;
  if (remaining_ == 0) {
    if (on_file_bytes_) on_file_bytes_(path_, absl::string_view());
    return sink_->EndFile();
  }
  return absl::OkStatus();
}

absl::Status TarUnpacker::Feed(absl::string_view bytes) {
  while (!bytes.empty()) {
    if (remaining_ > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, bytes.size()));
      const absl::string_view piece = bytes.substr(0, n);
      FERRY_RETURN_IF_ERROR(sink_->Write(piece));
      if (on_file_bytes_) on_file_bytes_(path_, piece);
      file_bytes_ += n;
      remaining_ -= n;
      bytes.remove_prefix(n);
      if (remaining_ == 0) FERRY_RETURN_IF_ERROR(sink_->EndFile());
      continue;
    }
    if (padding_ > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(padding_, bytes.size()));
      padding_ -= n;
      bytes.remove_prefix(n);
      continue;
    }
    if (ended_) {
      // Anything after the end-of-archive blocks must be zeros (tar's record padding).
      for (char c : bytes) {
        if (c != 0) return absl::DataLossError("base backup tar: data after the end of the archive");
      }
      return absl::OkStatus();
    }
    const size_t n = std::min(kBlock - header_.size(), bytes.size());
    header_.append(bytes.data(), n);
    bytes.remove_prefix(n);
    if (header_.size() == kBlock) {
      FERRY_RETURN_IF_ERROR(StartMember());
      header_.clear();
    }
  }
  return absl::OkStatus();
}

absl::Status TarUnpacker::Finish() const {
  if (!ended_ || remaining_ > 0 || !header_.empty()) {
    return absl::DataLossError("base backup tar ended early (no end-of-archive blocks)");
  }
  return absl::OkStatus();
}

absl::StatusOr<BaseBackupResult> TakeBaseBackup(client::pg::ReplicationConnection& conn,
                                                const BaseBackupOptions& options,
                                                pipeline::SnapshotSink* sink) {
  std::map<std::string, FileDigester> digesters;
  TarUnpacker tar(sink, [&](const std::string& path, absl::string_view bytes) {
    digesters[path].Update(bytes);
  });
  std::string manifest;
  enum class Part { kNone, kTar, kManifest } part = Part::kNone;
  uint64_t total = 0;
  auto on_start = [&](const client::pg::BackupPoints& points) {
    total = points.estimated_bytes;
    return absl::OkStatus();
  };
  auto on_copy = [&](absl::string_view msg) -> absl::Status {
    if (options.cancel != nullptr && options.cancel->load()) {
      return absl::CancelledError("base backup cancelled (ferry is stopping)");
    }
    if (msg.empty()) return absl::DataLossError("BASE_BACKUP sent an empty CopyData message");
    const char type = msg[0];
    msg.remove_prefix(1);
    switch (type) {
      case 'n': {
        if (part != Part::kNone) {
          return absl::FailedPreconditionError(
              "BASE_BACKUP sent a second archive (a tablespace?); ferry supports one data directory");
        }
        part = Part::kTar;
        return absl::OkStatus();
      }
      case 'd':
        if (part == Part::kTar) return tar.Feed(msg);
        if (part == Part::kManifest) {
          manifest.append(msg.data(), msg.size());
          return absl::OkStatus();
        }
        return absl::DataLossError("BASE_BACKUP sent data before an archive header");
      case 'p':
        if (msg.size() != 8) return absl::DataLossError("BASE_BACKUP progress message is not 8 bytes");
        if (options.progress) options.progress(pipeline::GetBe64(msg.data()), total);
        return absl::OkStatus();
      case 'm':
        FERRY_RETURN_IF_ERROR(tar.Finish());
        part = Part::kManifest;
        return absl::OkStatus();
      default:
        return absl::DataLossError(
            absl::StrCat("BASE_BACKUP sent an unknown CopyData type '", std::string(1, type), "'"));
    }
  };
  const bool incremental = !options.prior_manifest.empty();
  if (incremental) FERRY_RETURN_IF_ERROR(conn.UploadManifest(options.prior_manifest));
  FERRY_ASSIGN_OR_RETURN(client::pg::BackupPoints points,
                         conn.BaseBackup(options.label, incremental, on_start, on_copy));
  if (part != Part::kManifest) {
    return absl::DataLossError("BASE_BACKUP ended without a backup_manifest");
  }
  std::map<std::string, FileDigest> files;
  for (const auto& [path, d] : digesters) files[path] = d.Finish();
  FERRY_RETURN_IF_ERROR(CheckBackupManifest(manifest, files));
  // The manifest goes into the snapshot too: a restore materialises it, so pg_verifybackup
  // can check the restored directory against PostgreSQL's own list.
  FERRY_RETURN_IF_ERROR(sink->BeginFile("backup_manifest", 0600, 0));
  FERRY_RETURN_IF_ERROR(sink->Write(manifest));
  FERRY_RETURN_IF_ERROR(sink->EndFile());
  BaseBackupResult result;
  result.points = points;
  result.bytes = tar.file_bytes();
  result.files = tar.files();
  return result;
}

}  // namespace ferry::ingest::pg
