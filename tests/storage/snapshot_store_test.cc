// Content-defined chunking and the snapshot store: dedup, round trips, crash leftovers,
// damage detection and garbage collection.
#include "storage/snapshot_store.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "pipeline/endian.h"
#include "pipeline/frame.h"
#include "storage/chunker.h"
#include "tests/fixtures/scratch.h"

namespace ferry::storage {
namespace {

using ::ferry::testing::TestDir;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  return s;
}

std::vector<std::string> ChunkAll(absl::string_view data, size_t feed) {
  Chunker c;
  std::vector<std::string> out;
  absl::string_view chunk;
  for (size_t i = 0; i < data.size(); i += feed) {
    c.Add(data.substr(i, feed));
    while (c.Next(false, &chunk)) out.emplace_back(chunk);
  }
  while (c.Next(true, &chunk)) out.emplace_back(chunk);
  return out;
}

TEST(ChunkerTest, SizesBoundedAndIndependentOfFeedSize) {
  const std::string data = RandomBytes(8 << 20, 1);
  const auto a = ChunkAll(data, 4096);
  const auto b = ChunkAll(data, 1 << 20);
  ASSERT_EQ(a, b);
  ChunkerOptions o;
  size_t total = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    total += a[i].size();
    EXPECT_LE(a[i].size(), o.max_bytes);
    if (i + 1 < a.size()) {
      EXPECT_GE(a[i].size(), o.min_bytes);
    }
  }
  EXPECT_EQ(total, data.size());
  // Around the average: 8 MiB / 256 KiB = 32; allow a wide band, the point is "not 8 or 128".
  EXPECT_GT(a.size(), 12u);
  EXPECT_LT(a.size(), 80u);
}

TEST(ChunkerTest, InsertShiftsOnlyNearbyChunks) {
  const std::string data = RandomBytes(8 << 20, 2);
  std::string edited = data;
  edited.insert(1 << 20, "a few inserted bytes");
  const auto a = ChunkAll(data, 65536);
  const auto b = ChunkAll(edited, 65536);
  std::set<std::string> before(a.begin(), a.end());
  size_t shared = 0;
  for (const auto& c : b) shared += before.count(c);
  EXPECT_GE(shared + 3, b.size()) << "an insert changed more than the chunks around it";
}

SnapshotManifest WriteSnapshot(SnapshotStore* store, int64_t t,
                               const std::vector<std::pair<std::string, std::string>>& files,
                               SnapshotWriteStats* stats = nullptr) {
  auto w = store->Begin(t, {{"kind", "test"}});
  EXPECT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE((*w)->AddDir("dir", 0700, t).ok());
  for (const auto& [path, contents] : files) {
    EXPECT_TRUE((*w)->BeginFile(path, 0600, t).ok());
    for (size_t i = 0; i < contents.size(); i += 100000) {
      EXPECT_TRUE((*w)->Write(absl::string_view(contents).substr(i, 100000)).ok());
    }
    EXPECT_TRUE((*w)->EndFile().ok());
  }
  auto m = (*w)->Commit();
  EXPECT_TRUE(m.ok()) << m.status();
  if (stats != nullptr) *stats = (*w)->stats();
  return *m;
}

std::string ReadBack(const SnapshotStore& store, const SnapshotEntry& e) {
  std::string out;
  auto st = store.ReadFile(e, [&](absl::string_view b) {
    out.append(b.data(), b.size());
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

TEST(SnapshotStoreTest, RoundTripAndDedup) {
  const std::string dir = TestDir("ferry-snap-test");
  const std::string big = RandomBytes(3 << 20, 3);
  const std::string text(2 << 20, 'x');  // compressible
  {
    auto store = SnapshotStore::Open(dir, true);
    ASSERT_TRUE(store.ok()) << store.status();
    SnapshotWriteStats first;
    WriteSnapshot(store->get(), 1700000000, {{"base/1", big}, {"global/t", text}, {"empty", ""}},
                  &first);
    EXPECT_GT(first.new_chunks, 0u);
    SnapshotWriteStats second;
    std::string changed = big;
    changed[2 << 20] ^= 1;
    WriteSnapshot(store->get(), 1700000000, {{"base/1", changed}, {"global/t", text}}, &second);
    EXPECT_EQ(second.new_chunks, 1u) << "one flipped byte must cost one chunk";
    EXPECT_LT(second.new_stored_bytes, first.new_stored_bytes / 4);
  }
  auto store = SnapshotStore::Open(dir, false);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_EQ((*store)->snapshots().size(), 2u);
  const SnapshotManifest& m = (*store)->snapshots()[0];
  EXPECT_EQ(m.id, "20231114T221320Z");
  EXPECT_EQ((*store)->snapshots()[1].id, "20231114T221320Z-1");
  EXPECT_EQ(m.Get("kind"), "test");
  ASSERT_EQ(m.entries.size(), 4u);
  EXPECT_EQ(m.entries[0].type, SnapshotEntry::Type::kDir);
  EXPECT_EQ(ReadBack(**store, m.entries[1]), big);
  EXPECT_EQ(ReadBack(**store, m.entries[2]), text);
  EXPECT_EQ(m.entries[3].size, 0u);
  EXPECT_LT((*store)->PackBytes(), big.size() + big.size() / 2);
  std::filesystem::remove_all(dir);
}

TEST(SnapshotStoreTest, OneWriterAtATimeAndUncommittedIsInvisible) {
  const std::string dir = TestDir("ferry-snap-test");
  auto store = SnapshotStore::Open(dir, true);
  ASSERT_TRUE(store.ok());
  {
    auto w = (*store)->Begin(1, {});
    ASSERT_TRUE(w.ok());
    auto other = SnapshotStore::Open(dir, true);
    ASSERT_TRUE(other.ok());
    auto second = (*other)->Begin(2, {});
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE((*w)->BeginFile("f", 0600, 1).ok());
    ASSERT_TRUE((*w)->Write(RandomBytes(1 << 20, 4)).ok());
    ASSERT_TRUE((*w)->EndFile().ok());
    // destroyed without Commit: like a crash mid-backup
  }
  auto reopened = SnapshotStore::Open(dir, true);
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE((*reopened)->snapshots().empty());
  auto gone = (*reopened)->CollectGarbage(false);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->size(), 1u) << "the crashed writer's pack is garbage";
  EXPECT_EQ((*reopened)->PackBytes(), 0u);
  std::filesystem::remove_all(dir);
}

TEST(SnapshotStoreTest, DamageIsReportedNotReturned) {
  const std::string dir = TestDir("ferry-snap-test");
  auto store = SnapshotStore::Open(dir, true);
  ASSERT_TRUE(store.ok());
  const std::string data = RandomBytes(1 << 20, 5);
  SnapshotManifest m = WriteSnapshot(store->get(), 10, {{"f", data}});
  const ChunkRef& c = m.entries[1].chunks[0];
  {  // flip one byte in the middle of the chunk's stored bytes
    const int fd = open((*store)->PackPath(c.pack).c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char b;
    ASSERT_EQ(pread(fd, &b, 1, c.offset + 64 + c.stored_len / 2), 1);
    b ^= 0x40;
    ASSERT_EQ(pwrite(fd, &b, 1, c.offset + 64 + c.stored_len / 2), 1);
    close(fd);
  }
  auto st = (*store)->ReadFile(m.entries[1], [](absl::string_view) { return absl::OkStatus(); });
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_NE(st.message().find(".pack offset"), std::string::npos) << st;

  // A damaged manifest fails the open, naming the file.
  const std::string path = dir + "/" + m.id + ".snap";
  std::string text = *ReadWholeFile(path);
  text[text.find("meta")] = 'n';
  ASSERT_TRUE(WriteFileAtomically(dir, m.id + ".snap", text).ok());
  auto bad = SnapshotStore::Open(dir, false);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find(m.id), std::string::npos) << bad.status();
  std::filesystem::remove_all(dir);
}

TEST(SnapshotStoreTest, SealedChunksNeedTheirKeyAndDetectTampering) {
  const std::string dir = TestDir("ferry-snap-test");
  auto keys = pipeline::Keyring::Parse(absl::StrCat("2 ", std::string(64, 'a')), "test.keys");
  ASSERT_TRUE(keys.ok()) << keys.status();
  const std::string text = "confidential " + std::string(300000, 'z');  // compressible
  const std::string random = RandomBytes(400000, 6);                     // stored as is
  auto store = SnapshotStore::Open(dir, true, *keys);
  ASSERT_TRUE(store.ok()) << store.status();
  SnapshotManifest m = WriteSnapshot(store->get(), 10, {{"text", text}, {"random", random}});
  EXPECT_EQ(ReadBack(**store, m.entries[1]), text);
  EXPECT_EQ(ReadBack(**store, m.entries[2]), random);
  const std::string pack_path = (*store)->PackPath(m.entries[1].chunks[0].pack);
  ASSERT_EQ(m.entries[2].chunks[0].pack, m.entries[1].chunks[0].pack);
  const std::string pack = *ReadWholeFile(pack_path);
  EXPECT_EQ(pack.find("confidential"), std::string::npos);
  EXPECT_EQ(pack.find(random.substr(1000, 64)), std::string::npos);

  auto keyless = SnapshotStore::Open(dir, false, nullptr);
  ASSERT_TRUE(keyless.ok()) << keyless.status();  // manifests are readable without the key
  auto st = (*keyless)->ReadFile(m.entries[1], [](absl::string_view) { return absl::OkStatus(); });
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;

  // A flipped byte whose chunk checksums are recomputed is caught by the seal.
  const ChunkRef& c = m.entries[2].chunks[0];
  std::string bytes = pack;
  char* h = bytes.data() + c.offset;
  h[64 + c.stored_len / 2] ^= 0x40;
  pipeline::PutLe64(h + 16, pipeline::Checksum64(absl::string_view(h + 64, c.stored_len)));
  pipeline::PutLe64(h + 56, pipeline::Checksum64(absl::string_view(h, 56)));
  ASSERT_TRUE(WriteFileAtomically(dir + "/packs", std::filesystem::path(pack_path).filename(), bytes).ok());
  st = (*store)->ReadFile(m.entries[2], [](absl::string_view) { return absl::OkStatus(); });
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_NE(st.message().find("authentication failed"), std::string::npos) << st;
  std::filesystem::remove_all(dir);
}

// After a key rotation the first snapshot writes its chunks again under the new key, and the
// next ones (in this store and after a reopen) share those copies: dedup comes back at once.
TEST(SnapshotStoreTest, RotationResealsOnceThenDedups) {
  const std::string dir = TestDir("ferry-snap-test");
  auto old_keys = pipeline::Keyring::Parse(absl::StrCat("1 ", std::string(64, 'a')), "old.keys");
  auto new_keys = pipeline::Keyring::Parse(absl::StrCat("1 ", std::string(64, 'a'), "\n2 ", std::string(64, 'b')),
                                           "new.keys");
  ASSERT_TRUE(old_keys.ok() && new_keys.ok());
  const std::string data = RandomBytes(2 << 20, 9);
  {
    auto store = SnapshotStore::Open(dir, true, *old_keys);
    ASSERT_TRUE(store.ok()) << store.status();
    WriteSnapshot(store->get(), 10, {{"f", data}});
  }
  auto store = SnapshotStore::Open(dir, true, *new_keys);
  ASSERT_TRUE(store.ok()) << store.status();
  SnapshotWriteStats first, second, third;
  WriteSnapshot(store->get(), 20, {{"f", data}}, &first);
  EXPECT_EQ(first.new_chunks, first.chunks) << "chunks under the old key were reused";
  WriteSnapshot(store->get(), 30, {{"f", data}}, &second);
  EXPECT_EQ(second.new_chunks, 0u);
  auto reopened = SnapshotStore::Open(dir, true, *new_keys);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  WriteSnapshot(reopened->get(), 40, {{"f", data}}, &third);
  EXPECT_EQ(third.new_chunks, 0u) << "after a reopen the old copies won again";
  EXPECT_EQ(ReadBack(**reopened, (*reopened)->snapshots()[0].entries[1]), data);  // the old key still reads
  std::filesystem::remove_all(dir);
}

TEST(SnapshotStoreTest, GarbageCollectionKeepsSharedPacks) {
  const std::string dir = TestDir("ferry-snap-test");
  auto store = SnapshotStore::Open(dir, true);
  ASSERT_TRUE(store.ok());
  const std::string a = RandomBytes(1 << 20, 6), b = RandomBytes(1 << 20, 7);
  SnapshotManifest first = WriteSnapshot(store->get(), 100, {{"a", a}});
  SnapshotManifest second = WriteSnapshot(store->get(), 200, {{"a", a}, {"b", b}});
  ASSERT_TRUE((*store)->Remove(first.id).ok());
  auto gone = (*store)->CollectGarbage(false);
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->empty()) << "pack 1 still holds chunks of the kept snapshot";
  EXPECT_EQ(ReadBack(**store, (*store)->snapshots()[0].entries[1]), a);
  ASSERT_TRUE((*store)->Remove(second.id).ok());
  gone = (*store)->CollectGarbage(true);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->size(), 2u);
  EXPECT_GT((*store)->PackBytes(), 0u) << "dry run deletes nothing";
  std::filesystem::remove_all(dir);
}

TEST(SnapshotManifestTest, EscapedPathsRoundTrip) {
  SnapshotManifest m;
  m.id = "x";
  m.meta["label"] = "a b%c\n";
  SnapshotEntry e;
  e.path = "dir with space/\xff%";
  e.mode = 0640;
  m.entries.push_back(e);
  auto back = ParseSnapshotManifest(SerializeSnapshotManifest(m), "test");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->meta["label"], "a b%c\n");
  EXPECT_EQ(back->entries[0].path, e.path);
  EXPECT_EQ(back->entries[0].mode, 0640u);
}

}  // namespace
}  // namespace ferry::storage
