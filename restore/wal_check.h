// Checking the archived WAL a PostgreSQL restore needs before it is needed: every frame read
// and checked and every record's CRC-32C checked by decoding it (ScanWal), for a restore's
// plan (CheckRestoreWal) and to find the commit an --xid target names (FindCommit).
// pg_restore.h, which includes this, is the header callers use.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "absl/types/optional.h"
#include "ingest/pg/wal_decoder.h"
#include "pipeline/position.h"
#include "storage/stream_log.h"

namespace ferry::restore {

struct PgRestorePlan;  // pg_restore.h

// What checking a plan's WAL found: where its last complete record starts and ends.
struct WalCheck {
  pipeline::Lsn last_record_start;
  pipeline::Lsn last_record_end;
};

// Reads every frame of the plan (header and payload checksums, sealed frames authenticated)
// and checks every record's CRC-32C from the backup's start. kDataLoss names the damaged
// frame's file and offset and the latest point before it the archive can restore (an --xid).
// `cancel` stops it early (the result is then not a check).
absl::StatusOr<WalCheck> CheckRestoreWal(const storage::StreamLog& wal, const PgRestorePlan& plan,
                                         uint64_t segment_bytes, uint64_t system_id,
                                         const std::atomic<bool>* cancel = nullptr);

// Recovery reads ahead of the record it replays (recovery_prefetch decodes up to
// wal_decode_buffer_size, 512 kB by default, ahead), and wal-fetch serves whole segments: a
// point recovery can stop at before a damaged segment leaves this much WAL before it.
inline constexpr uint64_t kReadAheadMargin = 1 << 20;

// One pass over the WAL of frames [from, to], decoding from `start` (a record boundary in frame
// `from`): every frame read and checked (header and payload checksums; sealed frames
// authenticated) and every record's CRC-32C checked by PostgreSQL's rules. on_commit sees each
// commit in order and returns true to stop the scan there.
struct WalScan {
  pipeline::Lsn last_record_start;  // of the last complete record scanned
  pipeline::Lsn last_record_end;
  const storage::FrameLocation* damaged = nullptr;  // set with the kDataLoss returned
  // On damage: the last commit that ends kReadAheadMargin or more before the damaged frame's
  // WAL segment, which recovery can reach without reading that segment.
  absl::optional<ingest::pg::CommitInfo> restorable;
};
absl::Status ScanWal(const storage::StreamLog& wal, int64_t from, int64_t to, pipeline::Lsn start,
                     uint64_t segment_bytes, uint64_t system_id,
                     const std::function<bool(const ingest::pg::CommitInfo&)>& on_commit, WalScan* out);

// Decodes the WAL from frame `from` (starting at `start`, a record boundary) and returns the
// commit of `xid`, kNotFound if the archive has none.
absl::StatusOr<ingest::pg::CommitInfo> FindCommit(const storage::StreamLog& wal, int64_t from, pipeline::Lsn start,
                                                  uint32_t xid, uint64_t segment_bytes, uint64_t system_id);

}  // namespace ferry::restore
