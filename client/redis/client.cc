#include "client/redis/client.h"

#include <hiredis/hiredis.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "pipeline/check.h"

namespace ferry::client::redis {
namespace {

std::string ReplyText(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      return std::string(r->str, r->len);
    case REDIS_REPLY_INTEGER:
      return absl::StrCat(r->integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::vector<std::string> parts;
      for (size_t i = 0; i < r->elements; ++i) parts.push_back(ReplyText(r->element[i]));
      return absl::StrJoin(parts, "\n");
    }
    default:
      return "";
  }
}

redisReply* Run(redisContext* c, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  return static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), args.data(), lens.data()));
}

}  // namespace

absl::StatusOr<std::string> RunRedisCommand(const RedisEndpoint& endpoint, const std::vector<std::string>& argv) {
  const std::string where = absl::StrCat("redis ", endpoint.host, ":", endpoint.port);
  timeval tv{endpoint.timeout_ms / 1000, (endpoint.timeout_ms % 1000) * 1000};
  redisContext* c = redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, tv);
  if (c == nullptr || c->err) {
    std::string err = c != nullptr ? c->errstr : "out of memory";
    if (c != nullptr) redisFree(c);
    return absl::UnavailableError(absl::StrCat(where, ": ", err));
  }
  if (!endpoint.password.empty()) {
    redisReply* auth = Run(c, {"AUTH", endpoint.user.empty() ? "default" : endpoint.user, endpoint.password});
    const bool ok = auth != nullptr && auth->type != REDIS_REPLY_ERROR;
    if (auth != nullptr) freeReplyObject(auth);
    if (!ok) {
      redisFree(c);
      return absl::UnavailableError(absl::StrCat(where, ": AUTH refused; check the user and password"));
    }
  }
  redisReply* reply = Run(c, argv);
  if (reply == nullptr) {
    std::string err = c->errstr;
    redisFree(c);
    return absl::UnavailableError(absl::StrCat(where, ": ", err));
  }
  absl::StatusOr<std::string> out;
  if (reply->type == REDIS_REPLY_ERROR) {
    out = absl::FailedPreconditionError(absl::StrCat(argv.empty() ? "" : argv[0], ": ", std::string(reply->str, reply->len)));
  } else {
    out = ReplyText(reply);
  }
  freeReplyObject(reply);
  redisFree(c);
  return out;
}

absl::StatusOr<std::string> RedisInfoField(const RedisEndpoint& endpoint, const std::string& field) {
  FERRY_ASSIGN_OR_RETURN(std::string info, RunRedisCommand(endpoint, {"INFO", "all"}));
  for (absl::string_view line : absl::StrSplit(info, '\n')) {
    line = absl::StripTrailingAsciiWhitespace(line);
    if (absl::ConsumePrefix(&line, field) && absl::ConsumePrefix(&line, ":")) return std::string(line);
  }
  return absl::NotFoundError(absl::StrCat("INFO of redis ", endpoint.host, ":", endpoint.port, " has no ", field));
}

}  // namespace ferry::client::redis
