// CommandParser: splits Redis's replication stream into commands, keeping each command's exact
// bytes (the archive stores the stream byte for byte, so that positions are replication offsets
// and a restore replays exactly what the primary sent).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::client::redis {

// Arguments kept in Command::argv: the name and the first argument are all anyone looks at
// (SELECT <db>, REPLCONF GETACK); copying every value would double the bytes copied.
inline constexpr size_t kCommandArgsKept = 2;

struct Command {
  std::string raw;                // the command's bytes as they were in the stream
  std::vector<std::string> argv;  // its first kCommandArgsKept arguments
  size_t argc = 0;                // how many arguments it has
};

// The largest lengths a header may claim: Redis's own (an array of at most INT_MAX elements;
// proto-max-bulk-len can be raised to any size, so bulk strings are bounded only against
// overflow). Nothing is allocated on a header's word: a command's bytes are held as they arrive.
inline constexpr int64_t kMaxCommandArgs = 2147483647;
inline constexpr int64_t kMaxBulkBytes = int64_t{1} << 50;

// The replication stream holds nothing but RESP arrays of bulk strings, so this parses exactly
// that, resumably across Feed calls, rather than using hiredis's reader: hiredis 0.14 (Debian
// 12) allocates the element array a header claims, whatever its size (found by tests/fuzz).
class CommandParser {
 public:
  void Feed(absl::string_view bytes);

  // The next complete command, false when more bytes are needed. kDataLoss for anything
  // that is not a RESP array of bulk strings within the limits above, naming the byte offset
  // within everything fed.
  absl::StatusOr<bool> Next(Command* out);

  // Bytes fed that are not yet part of a returned command.
  size_t pending() const { return pending_.size() - start_; }

 private:
  // Reads a "<type><decimal>\r\n" line at pending_[*at]; false when it is not all there yet.
  absl::StatusOr<bool> ReadHeader(char type, int64_t max, size_t* at, int64_t* value) const;

  std::string pending_;   // fed bytes; those from start_ on are not part of a returned command
  size_t start_ = 0;
  uint64_t consumed_ = 0; // bytes of all returned commands
  // The command being parsed, resumed where the last call ran out of bytes: its argument
  // count (-1: header not read yet), the arguments read, where the next one starts (relative
  // to start_), and the arguments kept.
  int64_t argc_ = -1;
  int64_t args_read_ = 0;
  size_t next_ = 0;
  std::vector<std::string> argv_;
};

// True for a command a Redis restore must not replay: the primary's replication chatter
// (PING, REPLCONF) that is in the stream but changes no data.
bool IsReplicationChatter(const Command& c);

}  // namespace ferry::client::redis
