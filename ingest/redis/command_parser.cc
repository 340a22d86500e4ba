#include "ingest/redis/command_parser.h"

#include <hiredis/hiredis.h>
#include <strings.h>

#include "absl/strings/str_cat.h"

namespace ferry::ingest::redis {

CommandParser::CommandParser() : reader_(redisReaderCreate()) {}

CommandParser::~CommandParser() { redisReaderFree(reader_); }

void CommandParser::Feed(absl::string_view bytes) {
  // Drop what earlier commands took only once it is most of the buffer: erasing the front
  // after every command would move the rest of a 64 KiB read hundreds of times.
  if (start_ > 0 && start_ * 2 >= pending_.size()) {
    pending_.erase(0, start_);
    start_ = 0;
  }
  pending_.append(bytes.data(), bytes.size());
  redisReaderFeed(reader_, bytes.data(), bytes.size());
}

absl::StatusOr<bool> CommandParser::Next(Command* out) {
  void* reply = nullptr;
  if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
    return absl::DataLossError(absl::StrCat("malformed RESP in the replication stream after byte ", consumed_,
                                            ": ", reader_->errstr));
  }
  if (reply == nullptr) return false;
  auto* r = static_cast<redisReply*>(reply);
  absl::Status bad;
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
    bad = absl::DataLossError(absl::StrCat("replication stream after byte ", consumed_,
                                           " holds a RESP value of type ", r->type, ", not a command"));
  }
  out->argv.clear();
  out->argc = r->elements;
  for (size_t i = 0; bad.ok() && i < r->elements; ++i) {
    const redisReply* e = r->element[i];
    if (e->type != REDIS_REPLY_STRING) {
      bad = absl::DataLossError(absl::StrCat("replication stream after byte ", consumed_,
                                             ": command argument ", i, " is not a bulk string"));
      break;
    }
    if (i < kCommandArgsKept) out->argv.emplace_back(e->str, e->len);
  }
  freeReplyObject(r);
  if (!bad.ok()) return bad;
  // The reader holds the bytes it has not parsed yet; everything before them is this command.
  const size_t unparsed = reader_->len - reader_->pos;
  const size_t len = pending_.size() - start_ - unparsed;
  out->raw.assign(pending_, start_, len);
  start_ += len;
  consumed_ += len;
  return true;
}

bool IsReplicationChatter(const Command& c) {
  const std::string& name = c.argv[0];
  return strcasecmp(name.c_str(), "PING") == 0 || strcasecmp(name.c_str(), "REPLCONF") == 0;
}

}  // namespace ferry::ingest::redis
