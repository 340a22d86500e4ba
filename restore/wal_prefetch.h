// Decompress-ahead for wal-fetch. PostgreSQL's startup process asks restore_command for one
// WAL segment, replays it, then asks for the next: materialising on demand puts every
// segment's decompression on recovery's critical path. After serving segment N, wal-fetch
// leaves a detached process behind that materialises N+1 .. N+depth into a spool directory
// next to the destination (pg_wal/.ferry-prefetch), so the next wal-fetch is a rename.
//
// Spool layout: LOCK (flock held by the one running prefetcher), REQUESTED (name of the
// segment PostgreSQL asked for last; the prefetcher's window follows it), BOOT (the kernel's
// boot id when the spool was started) and complete segments under their WAL file names, each
// written to a temp name and renamed, so no process ever sees a torn segment under a real
// name. They are not fsynced — the spool is a cache — and a spool from before an OS restart
// (other BOOT) is emptied before use. Only complete segments are spooled: the archive's
// growing last segment is always materialised fresh.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "storage/archive.h"

namespace ferry::restore {

struct WalPrefetchOptions {
  int depth = 8;       // segments ahead of the last request (16 MB each); 0 turns prefetch off
  std::string spool;   // empty: DefaultSpool(dest)
  // The prefetcher exits when no new request came for this long (recovery ended or paused).
  absl::Duration idle_exit = absl::Seconds(5);
};

// dirname(dest)/.ferry-prefetch: pg_wal/.ferry-prefetch for restore_command's %p.
std::string DefaultSpool(const std::string& dest);

// FetchWalFile with decompress-ahead: takes `name` from the spool when the prefetcher has it
// (waiting for it when the prefetcher is about to write it), else materialises it; then, for
// a segment, records the request and starts a detached prefetcher unless one is running.
// Errors are FetchWalFile's; a spool that cannot be used only costs the speed-up.
absl::Status FetchWalFileAhead(storage::Archive& archive, const std::string& source,
                               const std::string& name, const std::string& dest,
                               const WalPrefetchOptions& options);

// The prefetch loop, run in this process (the detached child runs it; tests call it
// directly). Returns when idle for options.idle_exit, at the end of the archive's complete
// segments, when another prefetcher holds the spool, or on any error (the next wal-fetch
// materialises that segment itself and reports the error where PostgreSQL logs it).
void RunWalPrefetcher(storage::Archive& archive, const std::string& source, const std::string& spool,
                      const WalPrefetchOptions& options);

// Removes the spool (recovery_end_command, and wal-fetch at the end of the archive).
absl::Status DropSpool(const std::string& spool);

}  // namespace ferry::restore
