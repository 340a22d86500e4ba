// SpillFile: blobs come back in order and whole, empty ones included, in a file that is never
// linked into its directory.
#include "ingest/pg/spill_file.h"

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/fixtures/scratch.h"

namespace ferry::ingest::pg {
namespace {

TEST(SpillFileTest, BlobsComeBackInOrderAndTheDirectoryStaysEmpty) {
  const std::string dir = ferry::testing::TestDir("spill");
  auto spill = SpillFile::Create(dir);
  ASSERT_TRUE(spill.ok()) << spill.status();
  const std::vector<std::string> blobs = {"first", "", std::string(3 << 20, 'x'), "last"};
  for (const std::string& b : blobs) ASSERT_TRUE((*spill)->Append(b).ok());
  EXPECT_EQ((*spill)->blobs(), 4u);
  std::vector<std::string> back;
  ASSERT_TRUE((*spill)->ForEach([&](absl::string_view b) {
    back.emplace_back(b);
    return absl::OkStatus();
  }).ok());
  EXPECT_TRUE(back == blobs);
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  // The first error stops the reading and is returned.
  int calls = 0;
  const absl::Status st = (*spill)->ForEach([&](absl::string_view) {
    ++calls;
    return absl::CancelledError("enough");
  });
  EXPECT_TRUE(absl::IsCancelled(st));
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(SpillFile::Create(dir + "/missing").ok());
}

}  // namespace
}  // namespace ferry::ingest::pg
