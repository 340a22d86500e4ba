#include "client/pg/server_version.h"

#include "absl/strings/str_cat.h"

namespace ferry::client::pg {

absl::StatusOr<int> SupportedMajor(int server_version_num) {
  const int major = server_version_num / 10000;
  if (major < kOldestMajor || major > kNewestMajor) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the server is PostgreSQL ", major, ".", server_version_num % 10000, "; ferry supports PostgreSQL ",
        kOldestMajor, " to ", kNewestMajor, ": point the source at a supported server"));
  }
  return major;
}

}  // namespace ferry::client::pg
