// The POSIX DurableFile (pwrite + fdatasync) and the file helpers shared by both writers.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "pipeline/check.h"
#include "storage/durable_file.h"
#include "storage/durable_file_internal.h"
#include "storage/fault_injection.h"

namespace ferry::storage {

namespace {
std::atomic<FaultInjector*> g_injector{nullptr};
// 0: no archive opened for writing yet; else 1 (private) or 2 (group-readable).
std::atomic<int> g_archive_access{0};
}  // namespace

void SetArchiveGroupAccess(bool group) { g_archive_access.store(group ? 2 : 1, std::memory_order_relaxed); }

unsigned FileCreateMode() {
  const int a = g_archive_access.load(std::memory_order_relaxed);
  return a == 0 ? 0644 : a == 1 ? 0600 : 0640;
}

unsigned DirCreateMode() {
  const int a = g_archive_access.load(std::memory_order_relaxed);
  return a == 0 ? 0755 : a == 1 ? 0700 : 0750;
}

absl::Status CreateDirectory(const std::string& path) {
  if (mkdir(path.c_str(), DirCreateMode()) != 0) {
    if (errno == EEXIST) return absl::OkStatus();
    return ErrnoStatus("create directory", path, errno);
  }
  // A umask (077, say) must not take away the group access the archive asked for, and every
  // directory of a group-readable archive is setgid (2750), so that what any command creates
  // in it, at any depth, gets the archive's group.
  const int access = g_archive_access.load(std::memory_order_relaxed);
  if (access != 0 && chmod(path.c_str(), (access == 2 ? S_ISGID : 0) | DirCreateMode()) != 0) {
    return ErrnoStatus("chmod", path, errno);
  }
  return absl::OkStatus();
}

void SetFaultInjector(FaultInjector* injector) { g_injector.store(injector, std::memory_order_release); }

int64_t InjectFault(IoOp op, const std::string& path, int64_t result) {
  FaultInjector* injector = g_injector.load(std::memory_order_acquire);
  if (injector == nullptr) return result;
  const int64_t seen = injector->OnResult(op, path, result);
  // A short write may be invented, never a longer one than the kernel made.
  return op == IoOp::kWrite && seen > result ? result : seen;
}

absl::Status ErrnoStatus(absl::string_view op, absl::string_view path, int err) {
  // A call that failed without setting errno (stdio can) is still an error.
  if (err == 0) return absl::UnknownError(absl::StrCat(op, " ", path, " failed"));
  std::string msg = absl::StrCat(op, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case EIO:
      return absl::DataLossError(msg);
    case EAGAIN:
      return absl::UnavailableError(msg);
    case ETIMEDOUT:
      return absl::DeadlineExceededError(msg);  // a network file system's server
    case EBADF:
    case EFAULT:
      return absl::InternalError(msg);  // a closed descriptor or a bad buffer: a bug in ferry
    default:
      // Not absl::ErrnoToStatusCode: it gives some errors (EMFILE, EINVAL, ENOTDIR, ECANCELED)
      // codes that callers act on (disk full, a usage error, a held lock, a stop); strerror
      // names the error.
      return absl::UnknownError(msg);
  }
}

absl::StatusOr<WriterKind> ParseWriterKind(absl::string_view name) {
  if (name == "io_uring") return WriterKind::kIoUring;
  if (name == "posix") return WriterKind::kPosix;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown writer \"", name, "\": use \"io_uring\" or \"posix\""));
}

absl::string_view WriterKindName(WriterKind kind) {
  return kind == WriterKind::kIoUring ? "io_uring" : "posix";
}

void AbortOnSyncFailure(const std::string& path, int err) {
  // Never retried: after a failed fdatasync the page cache may have dropped the data, so a
  // later success would be a lie. Crash; recovery truncates what was not durably written.
  std::fprintf(stderr, "ferry: fatal: fdatasync %s: %s; aborting so that nothing unsynced is acknowledged\n",
               path.c_str(), std::strerror(err));
  std::abort();
}

absl::Status PwriteAll(int fd, const std::string& path, uint64_t offset, absl::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    n = InjectFault(IoOp::kWrite, path, n < 0 ? -errno : n);
    if (n < 0) {
      if (n == -EINTR) continue;
      return ErrnoStatus("write", path, static_cast<int>(-n));
    }
    done += static_cast<size_t>(n);  // a short write continues at the exact offset
  }
  return absl::OkStatus();
}

absl::Status PwriteStartingWriteback(int fd, const std::string& path, uint64_t offset, absl::string_view data) {
  // Left to itself the kernel writes a group commit back only when the fdatasync asks, so the
  // copy into the page cache and the device's write run one after the other. Starting the
  // write-back of each piece as soon as it is copied overlaps them, as dd's streaming write
  // does. sync_file_range promises nothing about durability and its errors are not ours to
  // judge: the fdatasync that follows is what makes the bytes durable, and reports failures.
  // A commit of one piece or less (the synchronous-standby case) is left to the fdatasync.
  if (data.size() <= kWritebackPiece) return PwriteAll(fd, path, offset, data);
  size_t done = 0;
  while (done < data.size()) {
    const size_t len = std::min(kWritebackPiece, data.size() - done);
    FERRY_RETURN_IF_ERROR(PwriteAll(fd, path, offset + done, data.substr(done, len)));
    (void)sync_file_range(fd, static_cast<off_t>(offset + done), static_cast<off_t>(len), SYNC_FILE_RANGE_WRITE);
    done += len;
  }
  return absl::OkStatus();
}

namespace {

class PosixFile final : public DurableFile {
 public:
  PosixFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override { close(fd_); }

  absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
    return PwriteAll(fd_, path_, offset, data);
  }

  absl::Status Sync() override {
    const int64_t rc = InjectFault(IoOp::kSync, path_, fdatasync(fd_) != 0 ? -errno : 0);
    if (rc < 0) AbortOnSyncFailure(path_, static_cast<int>(-rc));
    return absl::OkStatus();
  }

  absl::Status WriteDurably(uint64_t offset, absl::string_view data) override {
    FERRY_RETURN_IF_ERROR(PwriteStartingWriteback(fd_, path_, offset, data));
    return Sync();
  }

  absl::Status Truncate(uint64_t size) override {
    FERRY_RETURN_IF_ERROR(TruncateFile(fd_, path_, size));
    return Sync();
  }

  const std::string& path() const override { return path_; }

 private:
  int fd_;
  std::string path_;
};

}  // namespace

absl::StatusOr<int> OpenForWrite(const std::string& path, bool create) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), FileCreateMode());
  const bool created = fd >= 0 && create;
  if (fd < 0 && create && errno == EEXIST) fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  // As CreateDirectory: the archive's modes exactly, whatever the umask.
  if (created && g_archive_access.load(std::memory_order_relaxed) != 0 && fchmod(fd, FileCreateMode()) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus("chmod", path, err);
  }
  return fd;
}

absl::Status TruncateFile(int fd, const std::string& path, uint64_t size) {
  const int64_t rc =
      InjectFault(IoOp::kTruncate, path, ftruncate(fd, static_cast<off_t>(size)) != 0 ? -errno : 0);
  if (rc < 0) return ErrnoStatus("truncate", path, static_cast<int>(-rc));
  return absl::OkStatus();
}

std::unique_ptr<DurableFile> NewPosixFile(int fd, const std::string& path) {
  return std::make_unique<PosixFile>(fd, path);
}

absl::StatusOr<std::unique_ptr<DurableFile>> OpenDurableFile(const std::string& path,
                                                             WriterKind kind, bool create) {
  FERRY_ASSIGN_OR_RETURN(int fd, OpenForWrite(path, create));
  if (kind == WriterKind::kPosix) return NewPosixFile(fd, path);
  return NewUringFile(fd, path);
}

absl::Status ProbeWriter(WriterKind kind, const std::string& dir) {
  const std::string path = dir + "/.writer-probe";
  absl::Status st;
  {
    auto file = OpenDurableFile(path, kind, true);
    st = file.ok() ? (*file)->WriteDurably(0, std::string(4096, '\0')) : file.status();
  }
  unlink(path.c_str());
  return st;
}

absl::Status SyncDirectory(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open directory", dir, errno);
  const int64_t rc = InjectFault(IoOp::kSync, dir, fsync(fd) != 0 ? -errno : 0);
  close(fd);
  if (rc < 0) AbortOnSyncFailure(dir, static_cast<int>(-rc));
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& dir, const std::string& name,
                                 absl::string_view contents) {
  const std::string tmp = absl::StrCat(dir, "/.", name, ".tmp");
  const std::string final_path = absl::StrCat(dir, "/", name);
  {
    // A leftover temp file from a crash is removed rather than truncated: one sync, not two.
    if (unlink(tmp.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove", tmp, errno);
    FERRY_ASSIGN_OR_RETURN(int fd, OpenForWrite(tmp, true));
    PosixFile file(fd, tmp);
    FERRY_RETURN_IF_ERROR(file.WriteDurably(0, contents));
  }
  if (rename(tmp.c_str(), final_path.c_str()) != 0) {
    return ErrnoStatus("rename", final_path, errno);
  }
  return SyncDirectory(dir);
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, bool group_may_read) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return ErrnoStatus("stat", path, errno);
  if ((st.st_mode & (group_may_read ? 0037 : 0077)) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s can be %s by %s (mode %04o); secrets must be private: chmod %s %s", path,
        group_may_read ? "written by its group or read" : "read or written", group_may_read ? "others" : "group or others",
        st.st_mode & 07777, group_may_read ? "640" : "600", path));
  }
  return ReadWholeFile(path);
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  std::string out;
  // Sized from fstat (the file may still grow while we read: reading goes on to EOF).
  struct stat st;
  if (fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return ErrnoStatus("read", path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

}  // namespace ferry::storage
