#include "ingest/pg/backup_manifest.h"

#include <rapidjson/document.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ingest/pg/wal_decoder.h"
#include "pipeline/sha256.h"

namespace ferry::ingest::pg {

void FileDigester::Update(absl::string_view bytes) {
  size_ += bytes.size();
  crc_ = Crc32cExtend(crc_, bytes.data(), bytes.size());
}

FileDigest FileDigester::Finish() const { return FileDigest{size_, crc_ ^ 0xFFFFFFFFu}; }

absl::Status CheckBackupManifest(absl::string_view manifest,
                                 const std::map<std::string, FileDigest>& files) {
  constexpr absl::string_view kSumKey = "\"Manifest-Checksum\"";
  const size_t sum_at = manifest.rfind(kSumKey);
  if (sum_at == absl::string_view::npos) {
    return absl::InvalidArgumentError("backup_manifest has no Manifest-Checksum");
  }
  rapidjson::Document doc;
  doc.Parse(manifest.data(), manifest.size());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("Files") ||
      !doc["Files"].IsArray() || !doc.HasMember("Manifest-Checksum") ||
      !doc["Manifest-Checksum"].IsString()) {
    return absl::InvalidArgumentError("backup_manifest is not a PostgreSQL backup manifest");
  }
  const pipeline::Sha256Digest sum = pipeline::Sha256(manifest.substr(0, sum_at));
  const std::string want = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(sum.data()), sum.size()));
  if (want != doc["Manifest-Checksum"].GetString()) {
    return absl::DataLossError("backup_manifest: Manifest-Checksum does not match its contents");
  }
  size_t listed = 0;
  for (const auto& f : doc["Files"].GetArray()) {
    if (!f.IsObject() || !f.HasMember("Size") || !f["Size"].IsUint64()) {
      return absl::InvalidArgumentError("backup_manifest has a file entry without a Size");
    }
    std::string path;
    if (f.HasMember("Path") && f["Path"].IsString()) {
      path = f["Path"].GetString();
    } else if (f.HasMember("Encoded-Path") && f["Encoded-Path"].IsString()) {
      path = absl::HexStringToBytes(f["Encoded-Path"].GetString());
    } else {
      return absl::InvalidArgumentError("backup_manifest has a file entry without a path");
    }
    if (!f.HasMember("Checksum-Algorithm") || !f["Checksum-Algorithm"].IsString() ||
        std::string(f["Checksum-Algorithm"].GetString()) != "CRC32C" ||
        !f.HasMember("Checksum") || !f["Checksum"].IsString()) {
      return absl::InvalidArgumentError(
          absl::StrCat("backup_manifest: ", path, " has no CRC32C checksum"));
    }
    auto it = files.find(path);
    if (it == files.end()) {
      return absl::DataLossError(absl::StrCat("backup_manifest lists ", path, ", which is missing"));
    }
    ++listed;
    const uint64_t size = f["Size"].GetUint64();
    if (size != it->second.size) {
      return absl::DataLossError(absl::StrCat(path, " has ", it->second.size,
                                              " bytes; backup_manifest says ", size));
    }
    // The manifest prints the CRC's little-endian bytes in hex (docs/protocols.md, "Base backups").
    const uint32_t c = it->second.crc32c;
    const char le[4] = {static_cast<char>(c), static_cast<char>(c >> 8),
                        static_cast<char>(c >> 16), static_cast<char>(c >> 24)};
    const std::string got = absl::BytesToHexString(absl::string_view(le, 4));
    if (got != f["Checksum"].GetString()) {
      return absl::DataLossError(absl::StrCat(path, ": CRC32C ", got, " but backup_manifest says ",
                                              f["Checksum"].GetString()));
    }
  }
  if (listed != files.size()) {
    for (const auto& [path, digest] : files) {
      bool found = false;
      for (const auto& f : doc["Files"].GetArray()) {
        found = found || (f.HasMember("Path") && f["Path"].IsString() && path == f["Path"].GetString());
      }
      if (!found) {
        return absl::DataLossError(absl::StrCat(path, " is not listed in backup_manifest"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace ferry::ingest::pg
