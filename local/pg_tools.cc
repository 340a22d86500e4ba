// Helpers over a local PostgreSQL for tests and drills: table checksums, a base backup by pg_basebackup.
#include "local/pg_tools.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"

namespace ferry::local {

absl::StatusOr<std::string> TableChecksums(const LocalPostgres& pg,
                                           const std::vector<std::string>& tables) {
  std::string all;
  for (const std::string& t : tables) {
    FERRY_ASSIGN_OR_RETURN(
        std::string sum,
        pg.Query(absl::StrCat("select count(*) || ':' || coalesce(md5(string_agg(x::text, ',' "
                              "order by x::text)), '') from ",
                              t, " x")));
    absl::StrAppend(&all, t, "=", sum, "\n");
  }
  return all;
}

absl::Status TakeBaseBackupWithoutWal(const LocalPostgres& pg, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("create ", dir));
  FERRY_RETURN_IF_ERROR(GiveToServerUser(dir));
  FERRY_ASSIGN_OR_RETURN(
      CommandResult r,
      pg.RunTool({"pg_basebackup", "-h", "127.0.0.1", "-p", std::to_string(pg.port()), "-U",
                  "postgres", "-D", dir, "-X", "none", "--checkpoint=fast", "--no-sync"}));
  if (r.exit_code != 0) {
    return absl::FailedPreconditionError(absl::StrCat("pg_basebackup into ", dir, ": ", r.err));
  }
  return absl::OkStatus();
}

}  // namespace ferry::local
