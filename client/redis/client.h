// One-off commands to a Redis server as a client (INFO, CLIENT PAUSE, DEBUG DIGEST, ...):
// connect, AUTH when the endpoint has a password, run, disconnect.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/redis/replica_conn.h"

namespace ferry::client::redis {

// The reply as text: a status or bulk string as is, an integer in decimal, nil as "(nil)",
// an array as its elements one per line. An error reply is kFailedPrecondition with its
// message; no connection (or AUTH refused) is kUnavailable naming the server.
absl::StatusOr<std::string> RunRedisCommand(const RedisEndpoint& endpoint, const std::vector<std::string>& argv);

// One field of INFO (e.g. "master_repl_offset"); kNotFound when the reply has no such field.
absl::StatusOr<std::string> RedisInfoField(const RedisEndpoint& endpoint, const std::string& field);

}  // namespace ferry::client::redis
