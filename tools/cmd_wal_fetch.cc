// ferry wal-fetch: PostgreSQL's restore_command. Exit 0 found, 1 not found or failed.
#include "tools/commands.h"
#include "tools/restore/wal_fetch.h"

namespace ferry::tools {

int CmdWalFetch(const WalFetchArgs& args) {
  if (!args.drop_spool.empty()) {
    absl::Status st = DropSpool(args.drop_spool);
    return st.ok() ? 0 : Fail("wal-fetch", st);
  }
  if (args.name.empty() || args.dest.empty()) {
    return Fail("wal-fetch", absl::InvalidArgumentError("needs the requested file and its destination (%f %p)"));
  }
  auto archive = storage::Archive::Open(args.archive, storage::ArchiveOptions{});
  if (!archive.ok()) return Fail("wal-fetch", archive.status());
  absl::Status st = FetchWalFileAhead(**archive, args.source, args.name, args.dest, args.prefetch);
  if (absl::IsNotFound(st)) return 1;  // normal at the end of the archive: stay quiet
  if (!st.ok()) {
    (void)Fail("wal-fetch", st);
    return 1;  // restore_command knows only found (0) and not (non-zero)
  }
  return 0;
}

}  // namespace ferry::tools
