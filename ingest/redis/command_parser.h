// CommandParser: splits Redis's replication stream into commands with hiredis's RESP reader,
// keeping each command's exact bytes (the archive stores the stream byte for byte, so that
// positions are replication offsets and a restore replays exactly what the primary sent).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct redisReader;

namespace ferry::ingest::redis {

// Arguments kept in Command::argv: the name and the first argument are all anyone looks at
// (SELECT <db>, REPLCONF GETACK); copying every value would double the bytes copied.
inline constexpr size_t kCommandArgsKept = 2;

struct Command {
  std::string raw;                // the command's bytes as they were in the stream
  std::vector<std::string> argv;  // its first kCommandArgsKept arguments
  size_t argc = 0;                // how many arguments it has
};

class CommandParser {
 public:
  CommandParser();
  ~CommandParser();
  CommandParser(const CommandParser&) = delete;
  CommandParser& operator=(const CommandParser&) = delete;

  void Feed(absl::string_view bytes);

  // The next complete command, false when more bytes are needed. kDataLoss for anything
  // that is not a RESP array of bulk strings (the replication stream holds nothing else),
  // naming the byte offset within everything fed.
  absl::StatusOr<bool> Next(Command* out);

  // Bytes fed that are not yet part of a returned command.
  size_t pending() const { return pending_.size() - start_; }

 private:
  redisReader* reader_;
  std::string pending_;   // fed bytes; those from start_ on are not part of a returned command
  size_t start_ = 0;
  uint64_t consumed_ = 0; // bytes of all returned commands
};

// True for a command a Redis restore must not replay: the primary's replication chatter
// (PING, REPLCONF) that is in the stream but changes no data.
bool IsReplicationChatter(const Command& c);

}  // namespace ferry::ingest::redis
