// The postgres OS user: PostgreSQL refuses to run as root, so when ferry runs as root the
// local servers, restored servers and their restore_command run as postgres, and what they
// read (data directories, the archive, key files) must be theirs to read.
#pragma once

#include <pwd.h>

#include <string>

#include "absl/status/statusor.h"

namespace ferry::local {

inline constexpr char kServerUser[] = "postgres";

// The postgres user's entry; kFailedPrecondition naming the package that creates it.
absl::StatusOr<passwd*> ServerUser();

// When root, every directory above `path` must be searchable by the postgres user, or the
// server and restore_command fail later with a bare "Permission denied".
absl::Status CheckReachableByServerUser(const std::string& path);

// PostgreSQL refuses to run as root: when we are root, chown `path` (recursively) to the
// postgres user so the server and its tools can write there. No-op otherwise.
absl::Status GiveToServerUser(const std::string& path);

// Creates an archive directory the postgres user may read: mode 2750 and, when we are root,
// group postgres. The archive keeps that group access for everything ferry creates under it
// (storage::Archive), so a restored server's restore_command (ferry wal-fetch, run as
// postgres) reads it.
absl::Status MakeArchiveDirForServerUser(const std::string& path);

// When we are root, a restored server and its restore_command run as the postgres user:
// kFailedPrecondition naming the fix when that user cannot read `archive_path`. OK otherwise.
absl::Status CheckServerUserCanRead(const std::string& archive_path);
// The same for an archive key file (storage/archive_keys.h), mode 600 or 640: as root, the
// postgres user must own it or be in its group.
absl::Status CheckServerUserCanReadKeyFile(const std::string& key_file);

}  // namespace ferry::local
