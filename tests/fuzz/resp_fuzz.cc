// libFuzzer target: the Redis replication stream parser (the seed corpus: a real Redis 7 AOF,
// which is the replication stream's RESP, tests/fuzz/make_corpus.sh). Bytes arrive in two
// pieces split where the first byte says; commands are taken until more bytes are needed or
// the parser reports an error.
#include <cstddef>
#include <cstdint>

#include "client/redis/command_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t split = size > 1 ? (static_cast<size_t>(data[0]) * (size - 1)) / 255 : 0;
  const char* bytes = reinterpret_cast<const char*>(data + 1);
  ferry::client::redis::CommandParser parser;
  ferry::client::redis::Command cmd;
  for (absl::string_view piece : {absl::string_view(bytes, split), absl::string_view(bytes + split, size - 1 - split)}) {
    parser.Feed(piece);
    while (true) {
      auto more = parser.Next(&cmd);
      if (!more.ok()) return 0;
      if (!*more) break;
      (void)ferry::client::redis::IsReplicationChatter(cmd);
    }
  }
  return 0;
}
