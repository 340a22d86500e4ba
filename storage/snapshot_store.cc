// SnapshotStore: opening and loading a store's manifests, beginning a writer under the
// store's lock, reading files back chunk by chunk, removing snapshots and unused packs.
#include "storage/snapshot_store.h"

#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "pipeline/check.h"
#include "storage/durable_file_internal.h"
#include "storage/pack_file.h"

namespace ferry::storage {
namespace {

std::string IdForTime(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::vector<std::string> ListNames(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) names.push_back(e->d_name);
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<SnapshotStore>> SnapshotStore::Open(
    const std::string& dir, bool writable, std::shared_ptr<const pipeline::Keyring> keys) {
  std::unique_ptr<SnapshotStore> s(new SnapshotStore(dir, std::move(keys)));
  if (writable) {
    for (const std::string& d : {dir, dir + "/packs"}) {
      FERRY_RETURN_IF_ERROR(CreateDirectory(d));
    }
  }
  FERRY_RETURN_IF_ERROR(s->Load());
  return s;
}

absl::Status SnapshotStore::Load() {
  snapshots_.clear();
  chunks_.clear();
  for (const std::string& name : ListNames(dir_)) {
    if (!absl::EndsWith(name, kManifestSuffix)) continue;
    const std::string path = absl::StrCat(dir_, "/", name);
    FERRY_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
    FERRY_ASSIGN_OR_RETURN(SnapshotManifest m, ParseSnapshotManifest(text, path));
    Committed(std::move(m));
  }
  return absl::OkStatus();
}

void SnapshotStore::Committed(SnapshotManifest manifest) {
  for (const auto& e : manifest.entries) {
    // Manifests load oldest first: a later copy (re-sealed under a newer key) wins.
    for (const auto& c : e.chunks) chunks_.insert_or_assign(c.id, c);
  }
  auto at = std::upper_bound(
      snapshots_.begin(), snapshots_.end(), manifest.id,
      [](const std::string& id, const SnapshotManifest& m) { return id < m.id; });
  snapshots_.insert(at, std::move(manifest));
}

const SnapshotManifest* SnapshotStore::Find(absl::string_view id) const {
  for (const auto& m : snapshots_) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

std::string SnapshotStore::PackPath(uint32_t pack) const { return PackFilePath(dir_, pack); }

std::vector<uint32_t> SnapshotStore::PackNumbers() const {
  std::vector<uint32_t> packs;
  for (const std::string& name : ListNames(dir_ + "/packs")) {
    uint32_t n;
    if (absl::EndsWith(name, ".pack") &&
        absl::SimpleAtoi(absl::StripSuffix(name, ".pack"), &n)) {
      packs.push_back(n);
    }
  }
  return packs;
}

uint64_t SnapshotStore::PackBytes() const {
  uint64_t total = 0;
  for (uint32_t p : PackNumbers()) {
    struct stat st;
    if (stat(PackPath(p).c_str(), &st) == 0) total += st.st_size;
  }
  return total;
}

absl::StatusOr<int> SnapshotStore::Lock() const {
  const std::string path = dir_ + "/LOCK";
  FERRY_ASSIGN_OR_RETURN(const int fd, OpenForWrite(path, true));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "another backup or retention run holds ", path, "; wait for it to finish"));
    }
    return ErrnoStatus("lock", path, err);
  }
  return fd;
}

absl::StatusOr<std::unique_ptr<SnapshotWriter>> SnapshotStore::Begin(
    int64_t start_unix_seconds, std::map<std::string, std::string> meta) {
  FERRY_ASSIGN_OR_RETURN(int fd, Lock());
  // Another process may have committed snapshots since we loaded: dedup against them too.
  absl::Status loaded = Load();
  if (!loaded.ok()) {
    close(fd);
    return loaded;
  }
  std::vector<uint32_t> packs = PackNumbers();
  const uint32_t first_pack = packs.empty() ? 1 : packs.back() + 1;
  std::unique_ptr<SnapshotWriter> w(new SnapshotWriter(this, fd, first_pack));
  std::string id = IdForTime(start_unix_seconds);
  for (int n = 1; Find(id) != nullptr; ++n) id = absl::StrCat(IdForTime(start_unix_seconds), "-", n);
  w->manifest_.id = id;
  w->manifest_.meta = std::move(meta);
  return w;
}

absl::Status SnapshotStore::ReadFile(
    const SnapshotEntry& entry, const std::function<absl::Status(absl::string_view)>& sink) const {
  return ReadChunks(entry, &sink);
}

absl::Status SnapshotStore::CheckStored(const SnapshotEntry& entry) const { return ReadChunks(entry, nullptr); }

absl::Status SnapshotStore::ReadChunks(const SnapshotEntry& entry,
                                       const std::function<absl::Status(absl::string_view)>* sink) const {
  PackFds fds(dir_);
  ChunkBuffers buffers;
  for (const ChunkRef& c : entry.chunks) {
    const std::string path = PackPath(c.pack);
    const int fd = fds.Get(c.pack);
    if (fd < 0) {
      return absl::DataLossError(absl::StrCat("chunk ", ChunkIdHex(c.id), " of ", entry.path,
                                              ": cannot open ", path, ": ", strerror(errno)));
    }
    if (sink == nullptr) {  // CheckStored: as far as the checksums go
      FERRY_RETURN_IF_ERROR(ReadChunk(fd, path, c, entry.path, keys_.get(), &buffers, nullptr));
      continue;
    }
    absl::string_view data;
    FERRY_RETURN_IF_ERROR(ReadChunk(fd, path, c, entry.path, keys_.get(), &buffers, &data));
    FERRY_RETURN_IF_ERROR((*sink)(data));
  }
  return absl::OkStatus();
}

absl::Status SnapshotStore::Remove(absl::string_view id) {
  FERRY_ASSIGN_OR_RETURN(int fd, Lock());
  FdCloser closer{fd};
  const std::string path = absl::StrCat(dir_, "/", id, kManifestSuffix);
  if (unlink(path.c_str()) != 0) return ErrnoStatus("remove", path, errno);
  FERRY_RETURN_IF_ERROR(SyncDirectory(dir_));
  return Load();
}

absl::StatusOr<std::vector<std::string>> SnapshotStore::CollectGarbage(bool dry_run) {
  FERRY_ASSIGN_OR_RETURN(int fd, Lock());
  FdCloser closer{fd};
  FERRY_RETURN_IF_ERROR(Load());
  std::set<uint32_t> used;
  for (const auto& m : snapshots_) {
    for (const auto& e : m.entries) {
      for (const auto& c : e.chunks) used.insert(c.pack);
    }
  }
  std::vector<std::string> gone;
  for (uint32_t p : PackNumbers()) {
    if (used.count(p) > 0) continue;
    const std::string path = PackPath(p);
    if (!dry_run && unlink(path.c_str()) != 0) return ErrnoStatus("remove", path, errno);
    gone.push_back(path);
  }
  if (!dry_run && !gone.empty()) FERRY_RETURN_IF_ERROR(SyncDirectory(dir_ + "/packs"));
  return gone;
}

}  // namespace ferry::storage
