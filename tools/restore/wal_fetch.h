// wal-fetch: materialises the WAL file PostgreSQL's restore_command asks for from the frames
// in the archive (DESIGN.md "WAL is stored as frames, not as 16 MB files").
#pragma once

#include <string>

#include "absl/status/status.h"
#include "storage/archive.h"

namespace ferry::tools {

// Writes WAL file `name` (a segment "TTTTTTTTXXXXXXXXYYYYYYYY" or a "TTTTTTTT.history") of
// `source` to `dest` atomically. A segment's bytes come from the timeline that owns each
// position per the timeline's history. The archive's last, incomplete segment is served
// zero-padded to full size: recovery reads up to the last archived record and stops there,
// which is what makes a restore reach the last synced commit (RPO 0).
// kNotFound: not in the archive (restore_command exits 1 and recovery moves on).
// kDataLoss: the archive has a hole inside the segment, or a damaged frame.
absl::Status FetchWalFile(storage::Archive& archive, const std::string& source,
                          const std::string& name, const std::string& dest);

}  // namespace ferry::tools
