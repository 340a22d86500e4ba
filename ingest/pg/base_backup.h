// A base backup over the replication protocol, streamed into a SnapshotSink: the server's tar
// is unpacked on the fly (each file's bytes go straight to the sink, nothing is buffered or
// written to a temporary file) and every file is checked against PostgreSQL's own
// backup_manifest before the backup counts as taken.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "client/pg/replication_conn.h"
#include "pipeline/sink.h"

namespace ferry::ingest::pg {

struct BaseBackupResult {
  client::pg::BackupPoints points;
  uint64_t bytes = 0;   // file bytes received
  uint64_t files = 0;
};

struct BaseBackupOptions {
  std::string label = "ferry";
  // Called now and then with bytes done and the server's estimate (0 when unknown).
  std::function<void(uint64_t done, uint64_t total)> progress;
  const std::atomic<bool>* cancel = nullptr;  // set: stop at the next message (kCancelled)
  // Set (PostgreSQL 17+): the prior backup's backup_manifest; the server then sends only the
  // blocks changed since (INCREMENTAL files: see incremental_backup.h for what reads them).
  std::string prior_manifest;
};

// Runs BASE_BACKUP on `conn` (a replication connection of its own: the WAL stream keeps
// flowing on the service's connection) and hands every directory and file, then
// backup_manifest itself, to `sink`. The sink's contents are only good if this returns OK:
// the caller commits the snapshot then, and discards it otherwise.
absl::StatusOr<BaseBackupResult> TakeBaseBackup(client::pg::ReplicationConnection& conn,
                                                const BaseBackupOptions& options,
                                                pipeline::SnapshotSink* sink);

// Unpacks a ustar stream fed in arbitrary pieces into a SnapshotSink. Exposed for tests.
class TarUnpacker {
 public:
  explicit TarUnpacker(pipeline::SnapshotSink* sink,
                       std::function<void(const std::string& path, absl::string_view bytes)>
                           on_file_bytes = nullptr)
      : sink_(sink), on_file_bytes_(std::move(on_file_bytes)) {}
  absl::Status Feed(absl::string_view bytes);
  // OK once the end-of-archive blocks have been seen and no file is open.
  absl::Status Finish() const;
  uint64_t files() const { return files_; }
  uint64_t file_bytes() const { return file_bytes_; }

 private:
  absl::Status StartMember();
  pipeline::SnapshotSink* sink_;
  std::function<void(const std::string&, absl::string_view)> on_file_bytes_;
  std::string header_;       // a header block being collected
  std::string path_;         // the open file
  uint64_t remaining_ = 0;   // bytes of the open file still to come
  uint64_t padding_ = 0;     // zero bytes after it, up to the 512-byte boundary
  int zero_blocks_ = 0;
  bool ended_ = false;
  uint64_t files_ = 0;
  uint64_t file_bytes_ = 0;
};

}  // namespace ferry::ingest::pg
