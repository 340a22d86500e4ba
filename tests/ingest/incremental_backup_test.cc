// Rebuilding PostgreSQL 17's INCREMENTAL files: pg_combinebackup's rule (changed blocks from
// the increment, the rest from the prior copy up to the truncation length, zeros for blocks
// extended but never written), the label without its INCREMENTAL FROM lines, whole files
// passed through, and a backup_manifest of what is stored that passes the server's check.
#include "ingest/pg/incremental_backup.h"

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "pipeline/sha256.h"

namespace ferry::ingest::pg {
namespace {

// Files written to it, whole.
class MemorySink final : public pipeline::SnapshotSink {
 public:
  absl::Status AddDir(absl::string_view, uint32_t, int64_t) override { return absl::OkStatus(); }
  absl::Status BeginFile(absl::string_view path, uint32_t, int64_t) override {
    open_ = std::string(path);
    files[open_].clear();
    return absl::OkStatus();
  }
  absl::Status Write(absl::string_view bytes) override {
    files[open_].append(bytes.data(), bytes.size());
    return absl::OkStatus();
  }
  absl::Status EndFile() override { return absl::OkStatus(); }
  std::map<std::string, std::string> files;

 private:
  std::string open_;
};

std::string Block(char fill) { return std::string(kPgBlockBytes, fill); }

void PutLe32(std::string* s, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  s->append(b, 4);
}

// An INCREMENTAL file: header (padded to a block when it has blocks), then the blocks.
std::string Increment(uint32_t truncation, const std::vector<std::pair<uint32_t, char>>& blocks) {
  std::string f;
  PutLe32(&f, kIncrementalMagic);
  PutLe32(&f, static_cast<uint32_t>(blocks.size()));
  PutLe32(&f, truncation);
  for (const auto& [b, fill] : blocks) PutLe32(&f, b);
  if (!blocks.empty()) f.resize(kPgBlockBytes, '\0');
  for (const auto& [b, fill] : blocks) f += Block(fill);
  return f;
}

// A server-style manifest listing `files` (any digests: only its layout is reused).
std::string ServerManifest() {
  std::string text =
      "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 7447,\n\"Files\": [\n"
      "{ \"Path\": \"base/5/INCREMENTAL.16384\", \"Size\": 1, \"Last-Modified\": \"2026-12-07 10:00:00 GMT\", "
      "\"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" }\n],\n"
      "\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/5000028\", \"End-LSN\": \"0/5000100\" }\n],\n";
  const pipeline::Sha256Digest sum = pipeline::Sha256(text);
  return absl::StrCat(text, "\"Manifest-Checksum\": \"",
                      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(sum.data()), sum.size())),
                      "\"}\n");
}

// in_memory_bytes: where an INCREMENTAL file starts to wait in a spill file instead of memory.
void RebuildsFilesTheWayPgCombinebackupDoes(size_t in_memory_bytes) {
  // The prior copy: 4 blocks a b c d.
  std::map<std::string, std::string> prior = {{"base/5/16384", Block('a') + Block('b') + Block('c') + Block('d')},
                                              {"base/5/16385", Block('p') + Block('q')},
                                              // a partial last block: being extended when it was backed up
                                              {"base/5/16386", Block('m') + "xyz"}};
  MemorySink out;
  IncrementalCombiner combiner(
      &out,
      [&](const std::string& path, const std::function<absl::Status(absl::string_view)>& sink) {
        auto it = prior.find(path);
        if (it == prior.end()) return absl::NotFoundError(path);
        // Cut at odd places: blocks may arrive split.
        for (size_t at = 0; at < it->second.size(); at += 3000) {
          FERRY_RETURN_IF_ERROR(sink(absl::string_view(it->second).substr(at, 3000)));
        }
        return absl::OkStatus();
      },
      in_memory_bytes);
  auto file = [&](const std::string& path, const std::string& bytes) {
    ASSERT_TRUE(combiner.BeginFile(path, 0600, 1796637600).ok());
    for (size_t at = 0; at < bytes.size(); at += 5000) ASSERT_TRUE(combiner.Write(absl::string_view(bytes).substr(at, 5000)).ok());
    ASSERT_TRUE(combiner.EndFile().ok());
  };
  file("backup_label", "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nINCREMENTAL FROM LSN: 0/3000028\n"
                       "INCREMENTAL FROM TLI: 1\nLABEL: ferry\n");
  // Block 1 changed, truncated to 3 blocks (d is gone), extended to 6 with block 5 written:
  // block 3 was never written after the extension, so it is zeros, and so is block 4.
  file("base/5/INCREMENTAL.16384", Increment(3, {{1, 'B'}, {5, 'F'}}));
  // Unchanged: the prior copy as it was.
  file("base/5/INCREMENTAL.16385", Increment(2, {}));
  // The partial block counts as absent: zeros, as pg_combinebackup writes.
  file("base/5/INCREMENTAL.16386", Increment(2, {}));
  file("PG_VERSION", "17\n");
  file("backup_manifest", ServerManifest());
  ASSERT_TRUE(combiner.Finish().ok());

  EXPECT_EQ(out.files["backup_label"], "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nLABEL: ferry\n");
  EXPECT_TRUE(out.files["base/5/16384"] == Block('a') + Block('B') + Block('c') + Block('\0') + Block('\0') + Block('F'));
  EXPECT_TRUE(out.files["base/5/16385"] == prior["base/5/16385"]);
  EXPECT_TRUE(out.files["base/5/16386"] == Block('m') + Block('\0'));
  EXPECT_EQ(out.files["PG_VERSION"], "17\n");
  EXPECT_EQ(out.files.count("base/5/INCREMENTAL.16384"), 0u);
  EXPECT_EQ(combiner.rebuilt_files(), 3u);
  EXPECT_EQ(combiner.changed_blocks(), 2u);

  // The stored manifest lists what is stored (and passes the same check as a server's),
  // keeping the server's header and WAL ranges.
  std::map<std::string, FileDigest> digests;
  for (const auto& [path, bytes] : out.files) {
    if (path == "backup_manifest") continue;
    FileDigester d;
    d.Update(bytes);
    digests[path] = d.Finish();
  }
  const std::string& manifest = out.files["backup_manifest"];
  EXPECT_TRUE(CheckBackupManifest(manifest, digests).ok()) << manifest;
  EXPECT_NE(manifest.find("\"System-Identifier\": 7447"), std::string::npos) << manifest;
  EXPECT_NE(manifest.find("\"Start-LSN\": \"0/5000028\""), std::string::npos) << manifest;
  EXPECT_EQ(manifest.find("INCREMENTAL."), std::string::npos) << manifest;
}

TEST(IncrementalBackupTest, RebuildsFilesTheWayPgCombinebackupDoes) { RebuildsFilesTheWayPgCombinebackupDoes(64 << 20); }

// The same with every INCREMENTAL file past 10,000 bytes waiting in a spill file.
TEST(IncrementalBackupTest, LargeIncrementsWaitInASpillFileWithTheSameResult) {
  RebuildsFilesTheWayPgCombinebackupDoes(10000);
}

TEST(IncrementalBackupTest, DamageAndAMissingPriorFileAreDataLoss) {
  std::string bad = Increment(1, {{0, 'x'}});
  bad.pop_back();
  EXPECT_EQ(ParseIncrementalHeader(bad, "base/1/INCREMENTAL.1").status().code(), absl::StatusCode::kDataLoss);
  // 17.0 to 17.2 may say a truncation length past the segment: read as the whole segment.
  auto past = ParseIncrementalHeader(Increment(kPgSegmentBlocks + 5, {}), "base/1/INCREMENTAL.1");
  ASSERT_TRUE(past.ok()) << past.status();
  EXPECT_EQ(past->truncation_blocks, kPgSegmentBlocks);
  std::string magic = Increment(1, {});
  magic[0] ^= 1;
  EXPECT_EQ(ParseIncrementalHeader(magic, "base/1/INCREMENTAL.1").status().code(), absl::StatusCode::kDataLoss);

  MemorySink out;
  IncrementalCombiner combiner(&out, [](const std::string& path, const std::function<absl::Status(absl::string_view)>&) {
    return absl::NotFoundError(path);
  });
  ASSERT_TRUE(combiner.BeginFile("base/1/INCREMENTAL.2", 0600, 0).ok());
  ASSERT_TRUE(combiner.Write(Increment(1, {})).ok());
  const absl::Status st = combiner.EndFile();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("base/1/2"), std::string::npos) << st;
  EXPECT_EQ(combiner.Finish().code(), absl::StatusCode::kDataLoss);  // no server manifest came
}

}  // namespace
}  // namespace ferry::ingest::pg
