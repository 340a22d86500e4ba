// PostgreSQL 17+'s block-level incremental backups (docs/protocols.md, "Incremental
// backups"). After UPLOAD_MANIFEST of the prior backup's manifest, BASE_BACKUP (INCREMENTAL)
// sends a relation file that changed in part as INCREMENTAL.<name>: a header listing the
// changed blocks, then those blocks. IncrementalCombiner rebuilds each one into the whole
// file from the prior backup's copy, as pg_combinebackup does, while the backup streams; so
// every snapshot ferry stores is a full backup of its own (restores, retention and verify
// never need a chain), while the server reads and sends only the changed blocks.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ingest/pg/backup_manifest.h"
#include "ingest/pg/spill_file.h"
#include "pipeline/sink.h"

namespace ferry::ingest::pg {

inline constexpr uint32_t kIncrementalMagic = 0xd3ae1f0d;
inline constexpr size_t kPgBlockBytes = 8192;           // BLCKSZ
inline constexpr uint32_t kPgSegmentBlocks = 131072;    // RELSEG_SIZE: 1 GiB of blocks

struct IncrementalHeader {
  uint32_t truncation_blocks = 0;  // the prior copy's blocks from here on are gone
  std::vector<uint32_t> blocks;    // the changed blocks, in the order their data follows
  size_t data_offset = 0;          // where the first block's data starts
};

// Parses an INCREMENTAL file's header from its first bytes (`head`: at least the header, or
// the whole file when shorter) and checks that `file_bytes` is header plus blocks; kDataLoss
// naming `path` otherwise.
absl::StatusOr<IncrementalHeader> ParseIncrementalHeader(absl::string_view head, uint64_t file_bytes,
                                                         const std::string& path);
inline absl::StatusOr<IncrementalHeader> ParseIncrementalHeader(absl::string_view file, const std::string& path) {
  return ParseIncrementalHeader(file, file.size(), path);
}
// The most an INCREMENTAL file's header takes: a block number for every block of a segment,
// padded to a block.
inline constexpr size_t kIncrementalHeaderMaxBytes = 12 + 4 * size_t{kPgSegmentBlocks} + kPgBlockBytes;

// Hands the prior backup's copy of `path` to `sink`, in order; kNotFound when it has none.
using PriorFileReader =
    std::function<absl::Status(const std::string& path, const std::function<absl::Status(absl::string_view)>& sink)>;

// A SnapshotSink in front of `out` for an incremental backup's stream: passes whole files
// through, rebuilds INCREMENTAL.<name> files into <name>, drops the INCREMENTAL FROM lines
// from backup_label (a server refuses to start an incremental backup), and keeps the
// server's backup_manifest (it lists the INCREMENTAL files) for Finish.
class IncrementalCombiner final : public pipeline::SnapshotSink {
 public:
  // An INCREMENTAL file larger than `in_memory_bytes` waits for its rebuild in a SpillFile
  // (under $TMPDIR): it can hold up to 90 % of a 1 GiB segment's blocks.
  IncrementalCombiner(pipeline::SnapshotSink* out, PriorFileReader prior, size_t in_memory_bytes = 64 << 20)
      : out_(out), prior_(std::move(prior)), in_memory_bytes_(in_memory_bytes) {}

  absl::Status AddDir(absl::string_view path, uint32_t mode, int64_t mtime) override;
  absl::Status BeginFile(absl::string_view path, uint32_t mode, int64_t mtime) override;
  absl::Status Write(absl::string_view bytes) override;
  absl::Status EndFile() override;

  // After the backup: writes to `out` a backup_manifest of the files as stored (the
  // server's, with every file's size and CRC-32C as rebuilt), checked like the server's.
  absl::Status Finish();

  uint64_t rebuilt_files() const { return rebuilt_files_; }
  uint64_t changed_blocks() const { return changed_blocks_; }

 private:
  enum class Mode { kPass, kLabel, kIncrement, kServerManifest };
  absl::Status Emit(absl::string_view bytes);
  absl::Status BeginOut(const std::string& path, uint32_t mode, int64_t mtime);
  absl::Status EndOut();
  absl::Status Rebuild();

  pipeline::SnapshotSink* out_;
  PriorFileReader prior_;
  const size_t in_memory_bytes_;
  std::unique_ptr<SpillFile> spilled_;  // the INCREMENTAL file being received, once too large
  Mode mode_ = Mode::kPass;
  std::string path_;  // the file the server is sending
  uint32_t file_mode_ = 0;
  int64_t mtime_ = 0;
  std::string buffer_;  // an INCREMENTAL file or backup_label, whole
  std::string server_manifest_;
  std::string out_path_;
  FileDigester digester_;
  std::map<std::string, std::pair<FileDigest, int64_t>> stored_;  // every file written: digest, mtime
  uint64_t rebuilt_files_ = 0;
  uint64_t changed_blocks_ = 0;
};

// The manifest for `files` (path -> digest and mtime) in the form of `server_manifest`: its
// version and system identifier, its WAL-Ranges, a new Manifest-Checksum.
absl::StatusOr<std::string> RewriteBackupManifest(absl::string_view server_manifest,
                                                  const std::map<std::string, std::pair<FileDigest, int64_t>>& files);

}  // namespace ferry::ingest::pg
