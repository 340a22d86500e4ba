#include "client/redis/replication_file.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ferry::client::redis {

std::string FormatReplicationFile(uint32_t epoch, uint64_t offset, const std::string& replid) {
  return absl::StrCat(epoch, " ", offset, " ", replid, "\n");
}

absl::StatusOr<RedisResume> ParseReplicationFile(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(absl::StripTrailingAsciiWhitespace(text), ' ');
  RedisResume r;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &r.epoch) || !absl::SimpleAtoi(parts[1], &r.offset) ||
      parts[2].empty()) {
    return absl::DataLossError(absl::StrCat("replication file \"", text.substr(0, 80),
                                            "\" is not \"<epoch> <offset> <replid>\""));
  }
  r.replid = std::string(parts[2]);
  r.empty = false;
  return r;
}

}  // namespace ferry::client::redis
