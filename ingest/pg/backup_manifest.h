// PostgreSQL's backup_manifest (version 1; docs/protocols.md, "Base backups"): parse it, check its own SHA-256, and compare the files it lists with what was
// received or restored.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ferry::ingest::pg {

struct FileDigest {
  uint64_t size = 0;
  uint32_t crc32c = 0;  // CRC-32C of the whole file (finalised)
};

// Checks the manifest's Manifest-Checksum, then that every file it lists is in `files` with
// the same size and CRC-32C, and that `files` has nothing the manifest does not list.
// kDataLoss naming the first file that differs; kInvalidArgument when the text is not a
// version-1 manifest with CRC32C checksums.
absl::Status CheckBackupManifest(absl::string_view manifest,
                                 const std::map<std::string, FileDigest>& files);

// Accumulates a FileDigest over a file's bytes.
class FileDigester {
 public:
  void Update(absl::string_view bytes);
  FileDigest Finish() const;

 private:
  uint64_t size_ = 0;
  uint32_t crc_ = 0xFFFFFFFFu;
};

}  // namespace ferry::ingest::pg
