// CommandParser: the Redis replication stream split into commands byte-exactly, however the
// bytes arrive, and malformed or overflowing headers refused.
#include "client/redis/command_parser.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace ferry::client::redis {
namespace {

constexpr absl::string_view kStream =
    "*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n"
    "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\nb\x01\r\n"
    "*1\r\n$4\r\nPING\r\n"
    "*2\r\n$3\r\nGET\r\n$0\r\n\r\n";

std::vector<Command> ParseAll(CommandParser* p) {
  std::vector<Command> out;
  Command c;
  while (true) {
    auto got = p->Next(&c);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok() || !*got) return out;
    out.push_back(c);
  }
}

TEST(CommandParserTest, SplitsCommandsByteExactlyWhateverTheReads) {
  for (size_t step : {1, 2, 3, 7, 1000}) {
    CommandParser p;
    std::vector<Command> got;
    for (size_t i = 0; i < kStream.size(); i += step) {
      p.Feed(kStream.substr(i, step));
      for (Command& c : ParseAll(&p)) got.push_back(std::move(c));
    }
    ASSERT_EQ(got.size(), 4u) << "step " << step;
    std::string joined;
    for (const Command& c : got) joined += c.raw;
    EXPECT_EQ(joined, kStream);
    EXPECT_EQ(got[0].argv, (std::vector<std::string>{"SELECT", "0"}));
    EXPECT_EQ(got[1].argc, 3u);
    EXPECT_EQ(got[1].argv, (std::vector<std::string>{"SET", "k"}));  // the value is not copied
    EXPECT_TRUE(IsReplicationChatter(got[2]));
    EXPECT_EQ(got[3].argv, (std::vector<std::string>{"GET", ""}));
    EXPECT_EQ(p.pending(), 0u);
  }
}

void ExpectRefused(absl::string_view bytes, absl::string_view needle) {
  CommandParser p;
  p.Feed(bytes);
  Command c;
  absl::StatusOr<bool> got = true;
  while (got.ok() && *got) got = p.Next(&c);
  ASSERT_FALSE(got.ok()) << bytes;
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(got.status().message(), needle)) << got.status();
}

// A header claiming 1.6 G arguments, as fuzz_resp found (hiredis allocated 13 GB for it): the
// parser allocates nothing for it and waits for the arguments.
TEST(CommandParserTest, AHugeArgumentCountAllocatesNothing) {
  CommandParser p;
  p.Feed("*1666666666\r\n$3\r\nSET\r\n");
  Command c;
  auto got = p.Next(&c);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(*got);
  EXPECT_EQ(p.pending(), 22u);
}

TEST(CommandParserTest, RefusesWhatIsNotACommand) {
  // Lengths past Redis's own limits (or that would overflow) are refused on the header's word.
  ExpectRefused("*2147483648\r\n", "more than 2147483647 arguments");
  ExpectRefused("*1\r\n$99999999999999999999\r\n", "longer than 1125899906842624 bytes");
  ExpectRefused("PING\r\n", "at byte 0: expected a command");
  ExpectRefused("*1\r\n$4\r\nPING\r\n+OK\r\n", "at byte 14: expected a command");
  ExpectRefused("*1\r\n:1\r\n", "expected a bulk string");
  ExpectRefused("*1\r\n$2\r\nabc\r\n", "without its CRLF");
  ExpectRefused("*0\r\n", "an empty command");
  ExpectRefused("*-1\r\n", "a bad length line");
  ExpectRefused("*1x\r\n", "a bad length line");
}

}  // namespace
}  // namespace ferry::client::redis
