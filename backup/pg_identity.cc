#include "backup/pg_identity.h"

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"

namespace ferry::backup {

absl::Status CheckPostgresIdentity(const storage::SourceIdentity& identity, const std::string& archive_path,
                                   const std::string& source, const client::pg::SystemInfo& sys) {
  const std::string sysid = absl::StrCat(sys.system_id);
  const auto stored = identity.find("system_id");
  if (stored != identity.end() && stored->second == sysid) return absl::OkStatus();
  const std::string archived = stored == identity.end() ? "none" : stored->second;
  const int major = sys.server_version / 10000;
  const auto stored_major = identity.find("pg_major");
  if (stored_major != identity.end() && stored_major->second != absl::StrCat(major)) {
    // pg_upgrade (or a dump and restore) makes a new cluster: its WAL starts a new history.
    return absl::FailedPreconditionError(absl::StrCat(
        "source \"", source, "\": the server is now PostgreSQL ", major, " (system id ", sysid,
        "), but the archive holds PostgreSQL ", stored_major->second, "'s history (system id ", archived,
        "): a major upgrade makes a new system whose WAL cannot continue the old one. Give the source a new name "
        "in the config (its own stream in ", archive_path,
        ", the old one stays restorable) and take a backup once it streams"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "source \"", source, "\": server system id ", sysid, " differs from the archive's ", archived, " (",
      archive_path, "): point the source at the right server, or, after a major upgrade or a new initdb, give it a "
      "new name in the config"));
}

absl::Status ClaimPostgresIdentity(storage::Archive& archive, const std::string& source,
                                   const client::pg::SystemInfo& sys) {
  auto identity = archive.GetIdentity(source);
  const std::string major = absl::StrCat(sys.server_version / 10000);
  if (absl::IsNotFound(identity.status())) {
    return archive.SetIdentity(source, {{"kind", "postgres"},
                                        {"system_id", absl::StrCat(sys.system_id)},
                                        {"wal_segment_size", absl::StrCat(sys.segment_bytes)},
                                        {"pg_major", major}});
  }
  if (!identity.ok()) return identity.status();
  FERRY_RETURN_IF_ERROR(CheckPostgresIdentity(*identity, archive.path(), source, sys));
  if (identity->count("pg_major") == 0) {
    // Archives from before the major was recorded learn it from the same system.
    (*identity)["pg_major"] = major;
    return archive.SetIdentity(source, *identity);
  }
  return absl::OkStatus();
}

}  // namespace ferry::backup
