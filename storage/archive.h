// Archive: the directory that holds every stream of every source, its version marker, the
// lock that keeps two writers apart, and each source's identity. Layout:
// docs/archive-format.md ("Directory layout").
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pipeline/frame.h"
#include "storage/archive_keys.h"
#include "storage/stream_log.h"

namespace ferry::storage {

struct ArchiveOptions {
  bool writable = false;  // create if missing, take the lock, repair torn tails
  // Read-only: streams open despite damage, which StreamLog::Verify reports (ferry verify, ls).
  bool survey = false;
  WriterKind writer = WriterKind::kPosix;
  uint64_t segment_bytes = 64 << 20;
  // Seal new data (the caller does: batcher, snapshot writer) and open sealed data with these.
  std::shared_ptr<const pipeline::Keyring> keys = ProcessKeys();
};

// Key/value facts that tie a source to the archive (e.g. system_id, wal_segment_size).
using SourceIdentity = std::map<std::string, std::string>;

// Not thread-safe; StreamLogs it hands out live as long as the Archive.
class Archive {
 public:
  // Read-only: kNotFound "no ferry archive at DIR" when it is not one. Writable: creates it,
  // then takes an exclusive lock; kFailedPrecondition if another process holds it, or if the
  // archive is encrypted (its ENCRYPTED marker, left by the first writer with keys) and
  // options.keys is null, so that a config that lost its key never writes in the clear.
  static absl::StatusOr<std::unique_ptr<Archive>> Open(const std::string& path,
                                                       const ArchiveOptions& options);
  ~Archive();

  // Opens a stream (created when writable). Read-only: kNotFound if it has no such stream.
  absl::StatusOr<StreamLog*> Stream(absl::string_view source, pipeline::StreamKind kind);

  std::vector<std::string> Sources() const;
  std::vector<pipeline::StreamKind> Streams(absl::string_view source) const;

  // kNotFound when the source has none yet.
  absl::StatusOr<SourceIdentity> GetIdentity(absl::string_view source) const;
  absl::Status SetIdentity(absl::string_view source, const SourceIdentity& identity);

  const std::string& path() const { return path_; }
  const std::shared_ptr<const pipeline::Keyring>& keys() const { return options_.keys; }
  std::string SourceDir(absl::string_view source) const;
  // Where the source's SnapshotStore lives (snapshot_store.h).
  std::string SnapshotDir(absl::string_view source) const { return SourceDir(source) + "/snapshots"; }

 private:
  Archive(std::string path, ArchiveOptions options) : path_(std::move(path)), options_(options) {}

  const std::string path_;
  const ArchiveOptions options_;
  int lock_fd_ = -1;
  std::map<std::string, std::unique_ptr<StreamLog>> streams_;
};

// The archive's ENCRYPTED marker against `keys` (docs/archive-format.md "Encryption"): a
// writer (`writing`) without keys is refused once the archive is encrypted, a key whose id
// the archive knows with another check value is refused to anyone, and a writer records the
// check values of keys the marker lacks. Archive::Open runs it; so must anyone who writes
// into an archive without opening it writable (backups, which run beside the service).
absl::Status CheckKeys(const std::string& archive, const pipeline::Keyring* keys, bool writing);

// Checks that `name` can be a source name (letters, digits, '_', '-'; 1..64 chars).
absl::Status ValidateSourceName(absl::string_view name);

}  // namespace ferry::storage
