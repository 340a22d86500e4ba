#include "local/server_user.h"

#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "local/process.h"
#include "pipeline/check.h"

namespace ferry::local {

namespace fs = std::filesystem;

absl::StatusOr<passwd*> ServerUser() {
  passwd* pw = getpwnam(kServerUser);
  if (pw == nullptr) {
    return absl::FailedPreconditionError(
        "no 'postgres' OS user to run PostgreSQL as (we are root): install the Debian package "
        "postgresql-15 (scripts/install-deps.sh)");
  }
  return pw;
}

// When root, every directory above `path` must be searchable by the postgres user, or the
// server and restore_command fail later with a bare "Permission denied".
absl::Status CheckReachableByServerUser(const std::string& path) {
  if (!RunningAsRoot()) return absl::OkStatus();
  FERRY_ASSIGN_OR_RETURN(passwd * pw, ServerUser());
  for (fs::path p = fs::absolute(path).parent_path(); !p.empty(); p = p.parent_path()) {
    struct stat st;
    if (stat(p.c_str(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", p.string()));
    const bool searchable = (st.st_mode & S_IXOTH) != 0 || (st.st_uid == pw->pw_uid && (st.st_mode & S_IXUSR)) ||
                            (st.st_gid == pw->pw_gid && (st.st_mode & S_IXGRP));
    if (!searchable) {
      return absl::FailedPreconditionError(absl::StrCat(
          "directory ", p.string(), " (mode ", absl::Dec(st.st_mode & 07777), ") is not searchable by the "
          "postgres user the server runs as: chmod o+x it or use a directory under /tmp"));
    }
    if (p == p.root_path()) break;
  }
  return absl::OkStatus();
}

absl::Status GiveToServerUser(const std::string& path) {
  if (!RunningAsRoot()) return absl::OkStatus();
  FERRY_ASSIGN_OR_RETURN(passwd * pw, ServerUser());
  auto give = [&](const fs::path& p) -> absl::Status {
    if (lchown(p.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("chown ", p.string(), " to postgres"));
    }
    return absl::OkStatus();
  };
  FERRY_RETURN_IF_ERROR(give(path));
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(path, ec))) return absl::OkStatus();
  for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    FERRY_RETURN_IF_ERROR(give(it->path()));
  }
  if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("chown ", path, " to postgres: walk"));
  return absl::OkStatus();
}

absl::Status MakeArchiveDirForServerUser(const std::string& path) {
  if (mkdir(path.c_str(), 0750) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, absl::StrCat("create archive directory ", path));
  }
  if (RunningAsRoot()) {
    FERRY_ASSIGN_OR_RETURN(passwd * pw, ServerUser());
    if (chown(path.c_str(), static_cast<uid_t>(-1), pw->pw_gid) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("chgrp ", path, " to postgres's group"));
    }
  }
  // setgid: what ferry creates under it gets the same group.
  if (chmod(path.c_str(), 02750) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("chmod 2750 ", path));
  return absl::OkStatus();
}

namespace {

// Whether the postgres user reads `st`'s file (`need`: the owner's bits needed, e.g. 0500)
// through its owner or group bits. ferry's files are never for others, so those don't count.
bool ServerUserReads(const passwd* pw, const struct stat& st, mode_t need) {
  bool in_group = st.st_gid == pw->pw_gid;
  int n = 64;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  if (getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<size_t>(n));  // n now says how many there are
    if (getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) < 0) n = 0;
  }
  for (int i = 0; i < n; ++i) in_group = in_group || groups[static_cast<size_t>(i)] == st.st_gid;
  const mode_t m = st.st_mode;
  return (st.st_uid == pw->pw_uid && (m & need) == need) || (in_group && (m & (need >> 3)) == (need >> 3));
}

}  // namespace

namespace {

// As the postgres user (a forked child that takes its ids), the first path under `root` it
// cannot read (directories: list and enter), or "" when it reads them all. What counts is
// what the kernel lets that user do (owner, group, parent directories on the way), not what
// the mode bits of one directory suggest.
absl::StatusOr<std::string> FirstUnreadableAsServerUser(const passwd* pw, const std::string& root) {
  int fds[2];
  if (pipe(fds) != 0) return absl::ErrnoToStatus(errno, "pipe");
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::ErrnoToStatus(errno, "fork");
  }
  if (pid == 0) {
    close(fds[0]);
    std::string bad;
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
      bad = "(cannot take the postgres user's ids)";
    } else if (access(root.c_str(), R_OK | X_OK) != 0) {
      bad = root;
    } else {
      std::error_code ec;
      for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
           !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        const bool dir = it->is_directory(ec);
        if (access(it->path().c_str(), dir ? R_OK | X_OK : R_OK) != 0) {
          bad = it->path().string();
          break;
        }
      }
      if (ec && bad.empty()) bad = root;
    }
    (void)!write(fds[1], bad.data(), bad.size());
    _exit(0);
  }
  close(fds[1]);
  std::string bad;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) bad.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return bad;
}

}  // namespace

absl::Status CheckServerUserCanRead(const std::string& archive_path) {
  if (!RunningAsRoot()) return absl::OkStatus();
  FERRY_ASSIGN_OR_RETURN(passwd * pw, ServerUser());
  FERRY_ASSIGN_OR_RETURN(const std::string bad, FirstUnreadableAsServerUser(pw, archive_path));
  if (bad.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "the postgres user, which runs the restored server and its restore_command (ferry wal-fetch), cannot "
      "read %s in the archive %s: give the archive group access for it (chgrp -R postgres %s; chmod -R g+rX %s; "
      "find %s -type d -exec chmod g+s {} +), or restore as a user that can read it",
      bad, archive_path, archive_path, archive_path, archive_path));
}

absl::Status CheckServerUserCanReadKeyFile(const std::string& key_file) {
  if (!RunningAsRoot()) return absl::OkStatus();
  FERRY_ASSIGN_OR_RETURN(passwd * pw, ServerUser());
  struct stat st;
  if (stat(key_file.c_str(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", key_file));
  if (ServerUserReads(pw, st, 0400)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "the key file %s is not readable by the postgres user, which runs the restored server's restore_command "
      "(ferry wal-fetch): chgrp postgres %s; chmod 640 %s (or restore as a user that can read it)",
      key_file, key_file, key_file));
}

}  // namespace ferry::local
