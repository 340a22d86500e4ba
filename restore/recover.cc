#include "restore/recover.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "restore/pg_restore.h"
#include "storage/durable_file.h"

namespace ferry::restore {

absl::StatusOr<std::unique_ptr<local::LocalPostgres>> RecoverFromArchive(
    const std::string& backup, const std::string& target, const std::string& ferry_binary,
    const std::string& archive, const std::string& source, int timeout_seconds) {
  std::error_code ec;
  std::filesystem::copy(backup, target, std::filesystem::copy_options::recursive, ec);
  if (ec) return storage::ErrnoStatus("copy", absl::StrCat(backup, " to ", target), ec.value());
  FERRY_RETURN_IF_ERROR(WriteRecoverySettings(target, ferry_binary, archive, source, ""));
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<local::LocalPostgres> pg, local::LocalPostgres::StartExisting(target));
  FERRY_RETURN_IF_ERROR(WaitForRecoveryEnd(*pg, timeout_seconds));
  return pg;
}

absl::Status WaitForRecoveryEnd(local::LocalPostgres& pg, int timeout_seconds) {
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

}  // namespace ferry::restore
