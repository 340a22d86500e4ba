#include "ingest/pg/spill_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "pipeline/endian.h"

namespace ferry::ingest::pg {
namespace {

absl::Status IoError(const char* what, const std::string& where, int err) {
  const std::string message = absl::StrCat("spill file in ", where, ": ", what, ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) {
    return absl::ResourceExhaustedError(absl::StrCat(message, " (a streamed transaction is kept there until its commit)"));
  }
  return absl::UnavailableError(message);
}

absl::Status WriteAll(int fd, const char* p, size_t n, uint64_t at, const std::string& where) {
  while (n > 0) {
    const ssize_t w = pwrite(fd, p, n, static_cast<off_t>(at));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return IoError("write", where, w < 0 ? errno : EIO);
    p += w;
    n -= static_cast<size_t>(w);
    at += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, char* p, size_t n, uint64_t at, const std::string& where) {
  while (n > 0) {
    const ssize_t r = pread(fd, p, n, static_cast<off_t>(at));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return IoError("read", where, r < 0 ? errno : EIO);
    p += r;
    n -= static_cast<size_t>(r);
    at += static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SpillFile>> SpillFile::Create(const std::string& dir) {
  std::string where = dir;
  if (where.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    where = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  // Never linked into the directory: nothing to clean up after a crash.
  int fd = open(where.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
    std::string path = absl::StrCat(where, "/ferry-spill-XXXXXX");
    fd = mkostemp(path.data(), O_CLOEXEC);
    if (fd >= 0) unlink(path.c_str());
  }
  if (fd < 0) return IoError("create", where, errno);
  return std::unique_ptr<SpillFile>(new SpillFile(fd, std::move(where)));
}

SpillFile::~SpillFile() { close(fd_); }

absl::Status SpillFile::AppendRaw(absl::string_view bytes) {
  FERRY_RETURN_IF_ERROR(WriteAll(fd_, bytes.data(), bytes.size(), size_, where_));
  size_ += bytes.size();
  return absl::OkStatus();
}

absl::Status SpillFile::ReadAt(uint64_t offset, size_t n, std::string* out) const {
  if (offset > size_ || n > size_ - offset) {
    return absl::DataLossError(absl::StrCat("spill file in ", where_, ": ", n, " bytes at ", offset, " are past its end"));
  }
  out->resize(n);
  return ReadAll(fd_, out->data(), n, offset, where_);
}

absl::Status SpillFile::Append(absl::string_view blob) {
  char len[8];
  pipeline::PutBe64(len, blob.size());
  FERRY_RETURN_IF_ERROR(AppendRaw(absl::string_view(len, sizeof(len))));
  FERRY_RETURN_IF_ERROR(AppendRaw(blob));
  ++blobs_;
  return absl::OkStatus();
}

absl::Status SpillFile::ForEach(const std::function<absl::Status(absl::string_view)>& fn) const {
  std::string len, blob;
  uint64_t at = 0;
  for (uint64_t i = 0; i < blobs_; ++i) {
    FERRY_RETURN_IF_ERROR(ReadAt(at, 8, &len));
    const uint64_t n = pipeline::GetBe64(len.data());
    FERRY_RETURN_IF_ERROR(ReadAt(at + 8, n, &blob));
    at += 8 + n;
    FERRY_RETURN_IF_ERROR(fn(blob));
  }
  return absl::OkStatus();
}

}  // namespace ferry::ingest::pg
