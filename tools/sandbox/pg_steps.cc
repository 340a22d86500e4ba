#include "tools/sandbox/pg_steps.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "tools/restore/pg_restore.h"

namespace ferry::tools {

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
  if (ec) return absl::InternalError(absl::StrCat("create ", dir, ": ", ec.message()));
  FERRY_RETURN_IF_ERROR(GiveToServerUser(dir));
  FERRY_ASSIGN_OR_RETURN(
      CommandResult r,
      pg.RunTool({"pg_basebackup", "-h", "127.0.0.1", "-p", std::to_string(pg.port()), "-U",
                  "postgres", "-D", dir, "-X", "none", "--checkpoint=fast", "--no-sync"}));
  if (r.exit_code != 0) {
    return absl::InternalError(absl::StrCat("pg_basebackup into ", dir, ": ", r.err));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LocalPostgres>> RecoverFromArchive(
    const std::string& backup, const std::string& target, const std::string& ferry_binary,
    const std::string& archive, const std::string& source, int timeout_seconds) {
  std::error_code ec;
  std::filesystem::copy(backup, target, std::filesystem::copy_options::recursive, ec);
  if (ec) return absl::InternalError(absl::StrCat("copy ", backup, " to ", target, ": ", ec.message()));
  FERRY_RETURN_IF_ERROR(WriteRecoverySettings(target, ferry_binary, archive, source, ""));
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, LocalPostgres::StartExisting(target));
  FERRY_RETURN_IF_ERROR(WaitForRecoveryEnd(*pg, timeout_seconds));
  return pg;
}

absl::Status WaitForRecoveryEnd(LocalPostgres& pg, int timeout_seconds) {
  for (int i = 0; i < timeout_seconds * 10; ++i) {
    auto r = pg.Query("select pg_is_in_recovery()");
    if (r.ok() && *r == "f") return absl::OkStatus();
    if (!r.ok() && absl::IsUnavailable(r.status())) {
      FERRY_RETURN_IF_ERROR(pg.WaitReady(5));  // quotes the log if the postmaster has exited
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat("recovery in ", pg.data_dir(), " did not finish within ",
                                                  timeout_seconds, " s; see ", pg.log_path()));
}

std::string SelfExecutable() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "ferry";
}

}  // namespace ferry::tools
