// ferry wal-fetch: PostgreSQL's restore_command. Exit 0 found, 1 not found or failed.
#include "tools/commands.h"
#include "tools/restore/wal_fetch.h"

namespace ferry::tools {

int CmdWalFetch(const std::string& archive_path, const std::string& source,
                const std::string& name, const std::string& dest) {
  auto archive = storage::Archive::Open(archive_path, storage::ArchiveOptions{});
  if (!archive.ok()) return Fail("wal-fetch", archive.status());
  absl::Status st = FetchWalFile(**archive, source, name, dest);
  if (absl::IsNotFound(st)) return 1;  // normal at the end of the archive: stay quiet
  if (!st.ok()) {
    (void)Fail("wal-fetch", st);
    return 1;  // restore_command knows only found (0) and not (non-zero)
  }
  return 0;
}

}  // namespace ferry::tools
