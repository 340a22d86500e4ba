#include "restore/wal_prefetch.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/pg/replication_conn.h"
#include "local/process.h"
#include "pipeline/check.h"
#include "restore/wal_fetch.h"
#include "storage/durable_file.h"

namespace ferry::restore {
namespace {

using pipeline::TimelineId;

constexpr char kLock[] = "LOCK";
constexpr char kRequested[] = "REQUESTED";
constexpr char kBoot[] = "BOOT";
// How long a wal-fetch waits for a segment the prefetcher is about to write before doing it
// itself; far above one segment's materialisation, far below any recovery timeout.
constexpr auto kWaitForSpooled = std::chrono::seconds(30);
constexpr auto kPoll = std::chrono::milliseconds(2);

struct SegmentName {
  TimelineId tli;
  uint64_t segno = 0;
};

bool ParseSegment(const std::string& name, uint64_t seg_bytes, SegmentName* out) {
  return client::pg::ParseWalFileName(name, seg_bytes, &out->tli, &out->segno);
}

// True while some process holds the spool's lock, i.e. a prefetcher runs.
bool PrefetcherRunning(const std::string& spool) {
  const int fd = open((spool + "/" + kLock).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);
  return held;
}

absl::StatusOr<SegmentName> LastRequest(const std::string& spool, uint64_t seg_bytes) {
  FERRY_ASSIGN_OR_RETURN(std::string name, storage::ReadWholeFile(spool + "/" + kRequested));
  SegmentName seg;
  if (!ParseSegment(name, seg_bytes, &seg)) {
    return absl::DataLossError(absl::StrCat(spool, "/", kRequested, " does not name a WAL segment"));
  }
  return seg;
}

// Makes `spool` usable: spooled segments are written without fsync (a rename makes them
// whole for every reader while the OS runs), so a spool written before the OS restarted may
// hold torn files and is emptied. False when the spool cannot be used.
bool PrepareSpool(const std::string& spool) {
  auto boot = storage::ReadWholeFile("/proc/sys/kernel/random/boot_id");
  if (!boot.ok()) return false;
  std::error_code ec;
  std::filesystem::create_directories(spool, ec);
  if (ec) return false;
  auto spooled_in = storage::ReadWholeFile(spool + "/" + kBoot);
  if (spooled_in.ok() && *spooled_in == *boot) return true;
  for (const auto& entry : std::filesystem::directory_iterator(spool, ec)) {
    std::filesystem::remove_all(entry.path(), ec);
  }
  return WriteReplacing(spool + "/" + kBoot, *boot).ok();
}

// Moves spool/name to dest when the prefetcher has it. While a prefetcher runs and `name` is
// inside its window, it will write the segment shortly: wait rather than decompress the same
// bytes twice on a machine whose other cores are replaying.
bool TakeSpooled(const std::string& spool, const std::string& name, const SegmentName& seg,
                 uint64_t seg_bytes, int depth, const std::string& dest) {
  const std::string path = spool + "/" + name;
  const auto deadline = std::chrono::steady_clock::now() + kWaitForSpooled;
  while (true) {
    if (std::rename(path.c_str(), dest.c_str()) == 0) return true;
    auto last = LastRequest(spool, seg_bytes);
    const bool coming = last.ok() && last->tli == seg.tli && seg.segno > last->segno &&
                        seg.segno <= last->segno + static_cast<uint64_t>(depth) && PrefetcherRunning(spool);
    if (!coming || std::chrono::steady_clock::now() > deadline) {
      // One more look: the segment may have landed between the rename and the check.
      return std::rename(path.c_str(), dest.c_str()) == 0;
    }
    std::this_thread::sleep_for(kPoll);
  }
}

// Drops spooled segments recovery has gone past (or that belong to another timeline): they
// would never be asked for again.
void DropPassed(const std::string& spool, const SegmentName& now, uint64_t seg_bytes) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(spool, ec)) {
    SegmentName seg;
    if (!ParseSegment(entry.path().filename().string(), seg_bytes, &seg)) continue;
    if (seg.tli != now.tli || seg.segno <= now.segno) std::filesystem::remove(entry.path(), ec);
  }
}

// Forks the prefetcher as a process of its own session with no terminal or inherited output,
// so it outlives this wal-fetch (restore_command returns at once) and PostgreSQL's
// shutdown signals to the process group. It exits by itself when idle. wal-fetch is
// single-threaded, so the child may allocate and use the archive it inherited.
void SpawnPrefetcher(storage::Archive& archive, const std::string& source, const std::string& spool,
                     const WalPrefetchOptions& options) {
  const pid_t pid = fork();
  if (pid != 0) return;  // parent (or fork failed: no prefetch this time)
  local::DetachFromSession();
  RunWalPrefetcher(archive, source, spool, options);
  _exit(0);  // no atexit handlers or destructors of the parent's state
}

}  // namespace

std::string DefaultSpool(const std::string& dest) {
  std::string dir = std::filesystem::path(dest).parent_path().string();
  return (dir.empty() ? std::string(".") : dir) + "/.ferry-prefetch";
}

absl::Status FetchWalFileAhead(storage::Archive& archive, const std::string& source,
                               const std::string& name, const std::string& dest,
                               const WalPrefetchOptions& options) {
  const std::string spool = options.spool.empty() ? DefaultSpool(dest) : options.spool;
  auto seg_bytes = WalSegmentBytes(archive, source);
  SegmentName seg;
  if (options.depth <= 0 || !seg_bytes.ok() || !ParseSegment(name, *seg_bytes, &seg)) {
    return FetchWalFile(archive, source, name, dest);
  }
  if (!PrepareSpool(spool)) return FetchWalFile(archive, source, name, dest);
  if (!TakeSpooled(spool, name, seg, *seg_bytes, options.depth, dest)) {
    absl::Status st = FetchWalFile(archive, source, name, dest);
    if (IsNotInArchive(st)) {
      // Past the end of the archive: recovery is about to end; nothing ahead to keep.
      (void)DropSpool(spool);
      return st;
    }
    FERRY_RETURN_IF_ERROR(st);
  }
  // The spool is a cache: failing to record the request only costs the speed-up.
  if (WriteReplacing(spool + "/" + kRequested, name).ok()) {
    DropPassed(spool, seg, *seg_bytes);
    if (!PrefetcherRunning(spool)) SpawnPrefetcher(archive, source, spool, options);
  }
  return absl::OkStatus();
}

void RunWalPrefetcher(storage::Archive& archive, const std::string& source, const std::string& spool,
                      const WalPrefetchOptions& options) {
  const int lock = open((spool + "/" + kLock).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) return;
  if (flock(lock, LOCK_EX | LOCK_NB) != 0) {
    close(lock);
    return;  // another prefetcher serves this spool
  }
  auto seg_bytes = WalSegmentBytes(archive, source);
  SegmentName last{TimelineId(0), 0};
  uint64_t next = 0;
  auto idle_since = std::chrono::steady_clock::now();
  const auto idle_exit = absl::ToChronoMilliseconds(options.idle_exit);
  while (seg_bytes.ok()) {
    auto req = LastRequest(spool, *seg_bytes);
    if (!req.ok()) break;  // spool dropped: recovery ended
    if (req->tli != last.tli || req->segno != last.segno) {
      if (req->tli != last.tli) next = 0;
      last = *req;
      next = std::max(next, last.segno + 1);
      idle_since = std::chrono::steady_clock::now();
    }
    if (next > last.segno + static_cast<uint64_t>(options.depth)) {
      if (std::chrono::steady_clock::now() - idle_since > idle_exit) break;
      std::this_thread::sleep_for(kPoll);
      continue;
    }
    const std::string name = client::pg::WalFileName(last.tli, next, *seg_bytes);
    if (!std::filesystem::exists(spool + "/" + name)) {
      auto file = MaterialiseWalFile(archive, source, name);
      // Stop at the end of the archive's complete segments; a later wal-fetch starts a new
      // prefetcher that sees whatever the archive has gained by then.
      if (!file.ok() || !file->complete) break;
      if (!WriteReplacing(spool + "/" + name, file->bytes).ok()) break;
    }
    ++next;
  }
  close(lock);
}

absl::Status DropSpool(const std::string& spool) {
  // A prefetcher may be writing while we remove: it stops at its next write, which fails once
  // the directory is gone; retry the removal of what it wrote meanwhile.
  std::error_code ec;
  for (int attempt = 0; attempt < 10; ++attempt) {
    std::filesystem::remove_all(spool, ec);
    if (!ec) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return storage::ErrnoStatus("remove", spool, ec.value());
}

}  // namespace ferry::restore
