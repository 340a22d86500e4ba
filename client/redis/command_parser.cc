#include "client/redis/command_parser.h"

#include <strings.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace ferry::client::redis {

void CommandParser::Feed(absl::string_view bytes) {
  // Drop what earlier commands took only once it is most of the buffer: erasing the front
  // after every command would move the rest of a 64 KiB read hundreds of times.
  if (start_ > 0 && start_ * 2 >= pending_.size()) {
    pending_.erase(0, start_);
    start_ = 0;
  }
  pending_.append(bytes.data(), bytes.size());
}

absl::StatusOr<bool> CommandParser::ReadHeader(char type, int64_t max, size_t* at, int64_t* value) const {
  const size_t begin = *at;
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("malformed RESP in the replication stream at byte ",
                                            consumed_ + (begin - start_), ": ", what));
  };
  if (begin >= pending_.size()) return false;
  if (pending_[begin] != type) {
    return bad(type == '*' ? "expected a command (an array, '*')" : "expected a bulk string argument ('$')");
  }
  int64_t v = 0;
  size_t i = begin + 1;
  for (; i < pending_.size() && absl::ascii_isdigit(static_cast<unsigned char>(pending_[i])); ++i) {
    v = v * 10 + (pending_[i] - '0');
    if (v > max) {
      return bad(absl::StrCat(type == '*' ? "a command with more than " : "an argument longer than ", max,
                              type == '*' ? " arguments" : " bytes", " (ferry's limit)"));
    }
  }
  if (i + 1 >= pending_.size()) return false;  // the line's end has not arrived
  if (i == begin + 1 || pending_[i] != '\r' || pending_[i + 1] != '\n') return bad("a bad length line");
  *value = v;
  *at = i + 2;
  return true;
}

absl::StatusOr<bool> CommandParser::Next(Command* out) {
  if (argc_ < 0) {
    size_t at = start_;
    int64_t argc = 0;
    auto got = ReadHeader('*', kMaxCommandArgs, &at, &argc);
    if (!got.ok() || !*got) return got;
    if (argc == 0) {
      return absl::DataLossError(absl::StrCat("replication stream at byte ", consumed_, ": an empty command"));
    }
    argc_ = argc;
    args_read_ = 0;
    next_ = at - start_;
    argv_.clear();
  }
  while (args_read_ < argc_) {
    size_t at = start_ + next_;
    int64_t len = 0;
    auto got = ReadHeader('$', kMaxBulkBytes, &at, &len);
    if (!got.ok() || !*got) return got;
    const size_t end = at + static_cast<size_t>(len);
    if (end + 2 > pending_.size()) return false;  // the argument's bytes have not all arrived
    if (pending_[end] != '\r' || pending_[end + 1] != '\n') {
      return absl::DataLossError(absl::StrCat("malformed RESP in the replication stream at byte ",
                                              consumed_ + (end - start_), ": a bulk string without its CRLF"));
    }
    if (static_cast<size_t>(args_read_) < kCommandArgsKept) argv_.emplace_back(pending_, at, static_cast<size_t>(len));
    ++args_read_;
    next_ = end + 2 - start_;
  }
  out->argv = std::move(argv_);
  argv_.clear();
  out->argc = static_cast<size_t>(argc_);
  out->raw.assign(pending_, start_, next_);
  start_ += next_;
  consumed_ += next_;
  argc_ = -1;
  return true;
}

bool IsReplicationChatter(const Command& c) {
  const std::string& name = c.argv[0];
  return strcasecmp(name.c_str(), "PING") == 0 || strcasecmp(name.c_str(), "REPLCONF") == 0;
}

}  // namespace ferry::client::redis
