// ferry wal-fetch: PostgreSQL's restore_command. Exit 0 found, 1 not in the archive, and
// kWalFetchFatal (stopping recovery) for anything else: see restore/wal_fetch.h.
#include "restore/wal_fetch.h"
#include "tools/commands.h"

namespace ferry::tools {

int WalFetchFatal(const absl::Status& status) {
  // One line in PostgreSQL's log: what failed, and what to do about it.
  std::fprintf(stderr,
               "ferry wal-fetch: %s; recovery stopped instead of ending early: fix the cause, or run "
               "ferry restore postgres again (it names the latest point the archive can restore)\n",
               std::string(status.message()).c_str());
  return restore::kWalFetchFatal;
}

int CmdWalFetch(const WalFetchArgs& args) {
  if (!args.drop_spool.empty()) {
    absl::Status st = restore::DropSpool(args.drop_spool);
    return st.ok() ? 0 : Fail("wal-fetch", st);
  }
  if (args.name.empty() || args.dest.empty()) {
    return WalFetchFatal(absl::InvalidArgumentError("needs the requested file and its destination (%f %p)"));
  }
  auto archive = storage::Archive::Open(args.archive, storage::ArchiveOptions{});
  if (!archive.ok()) return WalFetchFatal(archive.status());
  absl::Status st = restore::FetchWalFileAhead(**archive, args.source, args.name, args.dest, args.prefetch);
  if (restore::IsNotInArchive(st)) return restore::kWalFetchNotInArchive;  // normal at the end of the archive: stay quiet
  if (!st.ok()) return WalFetchFatal(st);
  return 0;
}

}  // namespace ferry::tools
