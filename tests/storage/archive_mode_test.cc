// The archive's file modes: private by default (directories 0700, files 0600), group-readable
// (directories 2750, files 0640) when the operator gave the archive directory group access;
// whatever the umask, and for what commands write through a read-only open (backup, mark,
// drill) as for the service.
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "pipeline/frame.h"
#include "storage/archive.h"
#include "storage/snapshot_store.h"
#include "tests/fixtures/scratch.h"

namespace ferry::storage {
namespace {

unsigned Mode(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

// Opens `path` as a writable archive, writes a frame, a side file and an identity, and returns
// every file and directory under it with its mode.
std::map<std::string, unsigned> WriteAndList(const std::string& path) {
  ArchiveOptions o;
  o.writable = true;
  o.writer = WriterKind::kPosix;
  auto a = Archive::Open(path, o);
  EXPECT_TRUE(a.ok()) << a.status();
  if (!a.ok()) return {};
  EXPECT_TRUE((*a)->SetIdentity("main", {{"kind", "postgres"}}).ok());
  auto log = (*a)->Stream("main", pipeline::StreamKind::kPgWal);
  EXPECT_TRUE(log.ok()) << log.status();
  pipeline::EncodedFrames frames;
  std::vector<pipeline::Record> records = {{10, 0, std::string(10, 'x')}};
  auto h = pipeline::EncodeFrame({1, 0, 1, records}, 1, &frames.bytes);
  EXPECT_TRUE(h.ok());
  frames.headers.push_back(*h);
  EXPECT_TRUE((*log)->Write(frames).ok());
  EXPECT_TRUE((*log)->PutFile("00000002.history", "1\t0/0\tno reason\n").ok());
  std::map<std::string, unsigned> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(path)) out[e.path().string()] = Mode(e.path());
  out[path] = Mode(path);
  return out;
}

TEST(ArchiveModeTest, PrivateByDefault) {
  const std::string path = testing::TestDir("mode") + "/archive";  // does not exist yet
  auto modes = WriteAndList(path);
  ASSERT_GT(modes.size(), 6u);
  for (const auto& [p, mode] : modes) {
    EXPECT_EQ(mode, std::filesystem::is_directory(p) ? 0700u : 0600u) << p << " has mode " << std::oct << mode;
  }
}

TEST(ArchiveModeTest, GroupReadableWhenTheDirectoryIsWhateverTheUmask) {
  const std::string path = testing::TestDir("mode") + "/archive";
  ASSERT_EQ(mkdir(path.c_str(), 0750), 0);
  ASSERT_EQ(chmod(path.c_str(), 02750), 0);
  const mode_t old_umask = umask(077);  // a service's umask must not take the group access away
  auto modes = WriteAndList(path);
  umask(old_umask);
  ASSERT_GT(modes.size(), 6u);
  for (const auto& [p, mode] : modes) {
    EXPECT_EQ(mode, std::filesystem::is_directory(p) ? 0750u : 0640u) << p << " has mode " << std::oct << mode;
    // The setgid bit is kept on every directory, so that every file gets the archive's group.
    struct stat st;
    ASSERT_EQ(stat(p.c_str(), &st), 0);
    if (std::filesystem::is_directory(p)) {
      EXPECT_TRUE(st.st_mode & S_ISGID) << p << " lost its setgid bit";
    }
  }
}

// What `ferry backup` does beside a running service: a read-only open, then a snapshot written
// into the store. Its files and directories get the archive's modes under any umask.
std::map<std::string, unsigned> SnapshotThroughReadOnlyOpen(const std::string& path, mode_t mask) {
  WriteAndList(path);
  const mode_t old_umask = umask(mask);
  SetArchiveGroupAccess(false);  // left over from another archive: the open must decide
  auto a = Archive::Open(path, ArchiveOptions{});
  EXPECT_TRUE(a.ok()) << a.status();
  std::map<std::string, unsigned> out;
  if (a.ok()) {
    auto store = SnapshotStore::Open((*a)->SnapshotDir("main"), /*writable=*/true);
    EXPECT_TRUE(store.ok()) << store.status();
    auto w = (*store)->Begin(1, {{"kind", "test"}});
    EXPECT_TRUE(w.ok());
    EXPECT_TRUE((*w)->BeginFile("data/file", 0644, 1).ok());
    EXPECT_TRUE((*w)->Write(std::string(100000, 'y')).ok());
    EXPECT_TRUE((*w)->EndFile().ok());
    EXPECT_TRUE((*w)->Commit().ok());
  }
  umask(old_umask);
  for (const auto& e : std::filesystem::recursive_directory_iterator((*a)->SnapshotDir("main"))) {
    struct stat st;
    EXPECT_EQ(stat(e.path().c_str(), &st), 0);
    out[e.path().string()] = st.st_mode & 07777;
  }
  return out;
}

TEST(ArchiveModeTest, ReadOnlyOpenWritesWithTheArchiveModesUnderAnyUmask) {
  for (mode_t mask : {mode_t{022}, mode_t{077}, mode_t{0}}) {
    const std::string priv = testing::TestDir("mode") + "/archive";
    auto modes = SnapshotThroughReadOnlyOpen(priv, mask);
    ASSERT_GT(modes.size(), 2u);
    for (const auto& [p, mode] : modes) {
      EXPECT_EQ(mode, std::filesystem::is_directory(p) ? 0700u : 0600u)
          << p << " has mode " << std::oct << mode << " under umask " << mask;
    }
    const std::string group = testing::TestDir("mode") + "/archive";
    ASSERT_EQ(mkdir(group.c_str(), 0750), 0);
    ASSERT_EQ(chmod(group.c_str(), 02750), 0);
    modes = SnapshotThroughReadOnlyOpen(group, mask);
    ASSERT_GT(modes.size(), 2u);
    for (const auto& [p, mode] : modes) {
      EXPECT_EQ(mode, std::filesystem::is_directory(p) ? 02750u : 0640u)
          << p << " has mode " << std::oct << mode << " under umask " << mask;
    }
  }
}

}  // namespace
}  // namespace ferry::storage
