// The io_uring DurableFile: a WriteDurably of up to kRegisteredBytes is one submission of a
// write from a registered buffer linked to an fdatasync (IOSQE_IO_LINK): one group commit per
// call, one system call. Larger ones are written with pwrite and synced through the ring.
// liburing facts used here: (docs/protocols.md, "io_uring").
#include <liburing.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "storage/durable_file.h"
#include "storage/durable_file_internal.h"
#include "storage/fault_injection.h"

namespace ferry::storage {
namespace {

// Writes up to this size are copied into the registered (pinned) buffer and issued with
// write_fixed; larger ones go by pwrite piece by piece, each piece's write-back started at
// once (PwriteStartingWriteback, whose piece this is), so the pinned buffer stays small.
constexpr size_t kRegisteredBytes = kWritebackPiece;
constexpr uint64_t kWriteTag = 1;
constexpr uint64_t kSyncTag = 2;

class UringFile final : public DurableFile {
 public:
  UringFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}

  ~UringFile() override {
    if (ring_ready_) io_uring_queue_exit(&ring_);
    std::free(buffer_);
    close(fd_);
  }

  absl::Status Init() {
    int rc = io_uring_queue_init(8, &ring_, 0);
    if (rc < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "io_uring setup for ", path_, ": ", std::strerror(-rc),
          " (blocked by seccomp or kernel.io_uring_disabled?): set [archive] writer = \"posix\""));
    }
    ring_ready_ = true;
    if (posix_memalign(&buffer_, 4096, kRegisteredBytes) != 0) {
      return absl::ResourceExhaustedError("allocate io_uring buffer");
    }
    iovec iov{buffer_, kRegisteredBytes};
    rc = io_uring_register_buffers(&ring_, &iov, 1);
    if (rc < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "io_uring register buffer for ", path_, ": ", std::strerror(-rc),
          " (RLIMIT_MEMLOCK?): raise the limit or set [archive] writer = \"posix\""));
    }
    rc = io_uring_register_files(&ring_, &fd_, 1);
    if (rc < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("io_uring register file ", path_, ": ", std::strerror(-rc)));
    }
    return absl::OkStatus();
  }

  absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
    return Submit(offset, data, /*sync=*/false);
  }

  absl::Status Sync() override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    FERRY_CHECK(sqe != nullptr);
    io_uring_prep_fsync(sqe, 0, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
    sqe->user_data = kSyncTag;
    int rc = io_uring_submit(&ring_);
    if (rc < 0) return ErrnoStatus("io_uring submit", path_, -rc);
    io_uring_cqe* cqe = nullptr;
    rc = WaitCqe(&cqe);
    if (rc < 0) return ErrnoStatus("io_uring wait", path_, -rc);
    const int64_t res = InjectFault(IoOp::kSync, path_, cqe->res);
    io_uring_cqe_seen(&ring_, cqe);
    if (res < 0) AbortOnSyncFailure(path_, static_cast<int>(-res));
    return absl::OkStatus();
  }

  absl::Status WriteDurably(uint64_t offset, absl::string_view data) override {
    return Submit(offset, data, /*sync=*/true);
  }

  absl::Status Truncate(uint64_t size) override {
    FERRY_RETURN_IF_ERROR(TruncateFile(fd_, path_, size));
    return Sync();
  }

  const std::string& path() const override { return path_; }

 private:
  int WaitCqe(io_uring_cqe** cqe) {
    int rc;
    do {
      rc = io_uring_wait_cqe(&ring_, cqe);
    } while (rc == -EINTR);
    return rc;
  }

  // Issues write(+linked fdatasync) and waits for both completions. A short write cancels the
  // linked fdatasync (-ECANCELED); the rest is resubmitted at the exact offset and the sync
  // follows once every byte is written.
  absl::Status Submit(uint64_t offset, absl::string_view data, bool sync) {
    if (data.size() > kRegisteredBytes) {
      // A large batch is written with pwrite from this thread, then synced through the ring:
      // io_uring hands a buffered write it cannot do without blocking to an io-wq worker, and
      // for 16 MiB group commits that measured 577 MB/s against pwrite's 677 (best of two,
      // bench/e2e/disk.cc), before write-back was started piece by piece, which took both to
      // 1.0-1.3 GB/s. Small commits, the synchronous-standby case, keep the one-submission
      // write+fdatasync below.
      if (!sync) return PwriteAll(fd_, path_, offset, data);
      FERRY_RETURN_IF_ERROR(PwriteStartingWriteback(fd_, path_, offset, data));
      return Sync();
    }
    size_t done = 0;
    bool synced = !sync;
    while (done < data.size() || !synced) {
      const size_t len = data.size() - done;  // at most kRegisteredBytes (above)
      unsigned expected = 0;
      if (len > 0) {
        std::memcpy(buffer_, data.data() + done, len);
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        FERRY_CHECK(sqe != nullptr);
        io_uring_prep_write_fixed(sqe, 0, buffer_, static_cast<unsigned>(len), offset + done, 0);
        io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE | (sync ? IOSQE_IO_LINK : 0));
        sqe->user_data = kWriteTag;
        ++expected;
      }
      if (sync) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        FERRY_CHECK(sqe != nullptr);
        io_uring_prep_fsync(sqe, 0, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
        sqe->user_data = kSyncTag;
        ++expected;
      }
      int rc = io_uring_submit(&ring_);
      if (rc < 0) return ErrnoStatus("io_uring submit", path_, -rc);
      int64_t write_res = 0;
      int64_t sync_res = 0;
      for (unsigned i = 0; i < expected; ++i) {
        io_uring_cqe* cqe = nullptr;
        rc = WaitCqe(&cqe);
        if (rc < 0) return ErrnoStatus("io_uring wait", path_, -rc);
        if (cqe->user_data == kWriteTag) {
          write_res = InjectFault(IoOp::kWrite, path_, cqe->res);
        } else {
          sync_res = cqe->res == -ECANCELED ? cqe->res : InjectFault(IoOp::kSync, path_, cqe->res);
        }
        io_uring_cqe_seen(&ring_, cqe);
      }
      if (len > 0) {
        if (write_res < 0) return ErrnoStatus("write", path_, static_cast<int>(-write_res));
        done += static_cast<size_t>(write_res);
      }
      if (sync) {
        if (sync_res == -ECANCELED) continue;  // short write broke the link: go round again
        if (sync_res < 0) AbortOnSyncFailure(path_, static_cast<int>(-sync_res));
        if (done == data.size()) synced = true;
      }
    }
    return absl::OkStatus();
  }

  int fd_;
  std::string path_;
  io_uring ring_{};
  bool ring_ready_ = false;
  void* buffer_ = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DurableFile>> NewUringFile(int fd, const std::string& path) {
  auto file = std::make_unique<UringFile>(fd, path);
  FERRY_RETURN_IF_ERROR(file->Init());
  return file;
}

}  // namespace ferry::storage
