#include "client/redis/replica_conn.h"

#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "pipeline/check.h"

namespace ferry::client::redis {
namespace {

constexpr size_t kEofMarkLen = 40;  // diskless transfer: "$EOF:" + 40 random bytes, repeated at the end

absl::Status Unavailable(const RedisEndpoint& e, absl::string_view what) {
  return absl::UnavailableError(absl::StrCat("redis ", e.host, ":", e.port, ": ", what));
}

}  // namespace

absl::StatusOr<RedisEndpoint> ParseRedisAddress(absl::string_view address) {
  RedisEndpoint e;
  const size_t colon = address.rfind(':');
  e.host = std::string(colon == absl::string_view::npos ? address : address.substr(0, colon));
  if (colon != absl::string_view::npos &&
      (!absl::SimpleAtoi(address.substr(colon + 1), &e.port) || e.port <= 0 || e.port > 65535)) {
    return absl::InvalidArgumentError(absl::StrCat("address \"", address, "\": expected host:port"));
  }
  if (e.host.empty()) return absl::InvalidArgumentError(absl::StrCat("address \"", address, "\": no host"));
  return e;
}

absl::StatusOr<std::unique_ptr<ReplicaConnection>> ReplicaConnection::Connect(const RedisEndpoint& endpoint,
                                                                               int stop_fd, bool rdb_only) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(endpoint.host.c_str(), std::to_string(endpoint.port).c_str(), &hints, &res);
  if (rc != 0) return Unavailable(endpoint, gai_strerror(rc));
  int fd = -1;
  int err = 0;
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) return Unavailable(endpoint, std::strerror(err));
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  std::unique_ptr<ReplicaConnection> c(new ReplicaConnection(fd, stop_fd, endpoint));
  if (!endpoint.password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!endpoint.user.empty()) auth.push_back(endpoint.user);
    auth.push_back(endpoint.password);
    absl::Status st = c->Command(auth, "AUTH");
    if (!st.ok() && !absl::IsUnavailable(st)) {
      return absl::PermissionDeniedError(absl::StrCat("redis ", endpoint.host, ":", endpoint.port,
                                                      ": AUTH failed (", st.message(),
                                                      "): check the user and password ferry reads"));
    }
    FERRY_RETURN_IF_ERROR(st);
  }
  FERRY_RETURN_IF_ERROR(c->Command({"REPLCONF", "listening-port", "0"}, "REPLCONF listening-port"));
  FERRY_RETURN_IF_ERROR(c->Command({"REPLCONF", "capa", "eof", "capa", "psync2"}, "REPLCONF capa"));
  if (rdb_only) FERRY_RETURN_IF_ERROR(c->Command({"REPLCONF", "rdb-only", "1"}, "REPLCONF rdb-only"));
  return c;
}

ReplicaConnection::~ReplicaConnection() {
  if (fd_ >= 0) close(fd_);
}

absl::Status ReplicaConnection::Send(const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  char* cmd = nullptr;
  const long long n = redisFormatCommandArgv(&cmd, static_cast<int>(argv.size()), args.data(), lens.data());
  // hiredis fails to format a command only when it cannot allocate its buffer.
  if (n < 0) return absl::ResourceExhaustedError("redisFormatCommandArgv: out of memory");
  size_t done = 0;
  absl::Status st;
  while (done < static_cast<size_t>(n)) {
    const ssize_t w = send(fd_, cmd + done, static_cast<size_t>(n) - done, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      st = Unavailable(endpoint_, absl::StrCat("send: ", std::strerror(errno)));
      break;
    }
    done += static_cast<size_t>(w);
  }
  redisFreeCommand(cmd);
  return st;
}

absl::StatusOr<bool> ReplicaConnection::Fill(int timeout_ms, int wake_fd) {
  pollfd fds[3] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}, {wake_fd, POLLIN, 0}};
  int r;
  do {
    r = poll(fds, 3, timeout_ms);  // negative fds are ignored by poll
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Unavailable(endpoint_, absl::StrCat("poll: ", std::strerror(errno)));
  if (fds[1].revents & POLLIN) return absl::CancelledError("stop requested");
  if (r == 0 || !(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) return false;
  // Everything the socket holds, up to kMaxFill: a stream read in bursts (ReadPacer) must not
  // be capped at one buffer per wake-up.
  constexpr size_t kMaxFill = 4 << 20;
  char buf[1 << 16];
  size_t got = 0;
  while (got < kMaxFill) {
    const ssize_t n = recv(fd_, buf, sizeof(buf), got == 0 ? 0 : MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && got > 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) return Unavailable(endpoint_, absl::StrCat("recv: ", std::strerror(errno)));
    if (n == 0) {
      if (got > 0) break;  // the close is seen by the next read, after what came before it
      return Unavailable(endpoint_, "the primary closed the connection");
    }
    in_.append(buf, static_cast<size_t>(n));
    got += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < sizeof(buf)) break;  // the socket is empty, most likely
  }
  return true;
}

absl::StatusOr<std::string> ReplicaConnection::ReadLine() {
  const auto timeout = std::chrono::milliseconds(endpoint_.timeout_ms);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    // The primary sends bare "\n" while it prepares an RDB, to keep the link alive: each one
    // restarts the wait.
    size_t skip = 0;
    while (skip < in_.size() && in_[skip] == '\n') ++skip;
    if (skip > 0) {
      in_.erase(0, skip);
      deadline = std::chrono::steady_clock::now() + timeout;
    }
    const size_t eol = in_.find("\r\n");
    if (eol != std::string::npos) {
      std::string line = in_.substr(0, eol);
      in_.erase(0, eol + 2);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Unavailable(endpoint_, "no reply (nor keepalive) within the timeout");
    FERRY_ASSIGN_OR_RETURN(bool got, Fill(static_cast<int>(left.count())));
    (void)got;
  }
}

absl::Status ReplicaConnection::Command(const std::vector<std::string>& argv, absl::string_view what) {
  FERRY_RETURN_IF_ERROR(Send(argv));
  absl::StatusOr<std::string> reply = ReadLine();
  if (!reply.ok()) return reply.status();
  const std::string& line = *reply;
  if (absl::StartsWith(line, "+")) return absl::OkStatus();
  if (absl::StartsWith(line, "-")) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": ", absl::string_view(line).substr(1)));
  }
  return absl::DataLossError(absl::StrCat(what, ": unexpected reply \"", line.substr(0, 64), "\""));
}

absl::StatusOr<SyncStart> ReplicaConnection::Psync(const std::string& replid, int64_t offset) {
  FERRY_RETURN_IF_ERROR(Send({"PSYNC", replid.empty() ? "?" : replid, replid.empty() ? "-1" : absl::StrCat(offset)}));
  absl::StatusOr<std::string> reply = ReadLine();
  if (!reply.ok()) return reply.status();
  const std::string& line = *reply;
  SyncStart s;
  std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (!parts.empty() && parts[0] == "+FULLRESYNC" && parts.size() == 3 &&
      absl::SimpleAtoi(parts[2], &s.offset)) {
    s.full = true;
    s.replid = parts[1];
    return s;
  }
  if (!parts.empty() && parts[0] == "+CONTINUE") {
    if (parts.size() > 1) s.replid = parts[1];
    return s;
  }
  if (absl::StartsWith(line, "-")) {
    // -LOADING, -NOMASTERLINK (a replica whose own primary is away), -ERR ...: try again later.
    return Unavailable(endpoint_, absl::StrCat("PSYNC refused: ", absl::string_view(line).substr(1)));
  }
  return absl::DataLossError(absl::StrCat("redis ", endpoint_.host, ":", endpoint_.port,
                                          ": unexpected PSYNC reply \"", line.substr(0, 64), "\""));
}

absl::StatusOr<uint64_t> ReplicaConnection::ReceiveRdb(
    const std::function<absl::Status(absl::string_view)>& on_bytes) {
  absl::StatusOr<std::string> first = ReadLine();
  if (!first.ok()) return first.status();
  const std::string& header = *first;
  if (!absl::StartsWith(header, "$")) {
    return absl::DataLossError(absl::StrCat("redis ", endpoint_.host, ":", endpoint_.port,
                                            ": expected the RDB's \"$\" header, got \"", header.substr(0, 64), "\""));
  }
  if (absl::StartsWith(header, "$EOF:")) {
    const std::string mark = header.substr(5);
    if (mark.size() != kEofMarkLen) {
      return absl::DataLossError(absl::StrCat("redis: diskless RDB mark of ", mark.size(), " bytes, expected 40"));
    }
    // Everything up to the mark is RDB; hold back the last 40 bytes until more arrive.
    uint64_t total = 0;
    while (true) {
      if (in_.size() >= kEofMarkLen && absl::EndsWith(in_, mark)) {
        const size_t n = in_.size() - kEofMarkLen;
        FERRY_RETURN_IF_ERROR(on_bytes(absl::string_view(in_).substr(0, n)));
        total += n;
        in_.clear();
        return total;
      }
      if (in_.size() > kEofMarkLen) {
        const size_t n = in_.size() - kEofMarkLen;
        FERRY_RETURN_IF_ERROR(on_bytes(absl::string_view(in_).substr(0, n)));
        total += n;
        in_.erase(0, n);
      }
      FERRY_ASSIGN_OR_RETURN(bool got, Fill(endpoint_.timeout_ms));
      if (!got) return Unavailable(endpoint_, "RDB transfer stalled");
    }
  }
  uint64_t len = 0;
  if (!absl::SimpleAtoi(absl::string_view(header).substr(1), &len)) {
    return absl::DataLossError(absl::StrCat("redis: bad RDB length header \"", header.substr(0, 64), "\""));
  }
  uint64_t left = len;
  while (left > 0) {
    if (in_.empty()) {
      FERRY_ASSIGN_OR_RETURN(bool got, Fill(endpoint_.timeout_ms));
      if (!got) return Unavailable(endpoint_, "RDB transfer stalled");
      continue;
    }
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, in_.size()));
    FERRY_RETURN_IF_ERROR(on_bytes(absl::string_view(in_).substr(0, n)));
    in_.erase(0, n);
    left -= n;
  }
  return len;
}

absl::Status ReplicaConnection::ReadStream(std::string* out, int timeout_ms, int wake_fd) {
  if (in_.empty()) {
    FERRY_ASSIGN_OR_RETURN(bool got, Fill(timeout_ms, wake_fd));
    if (!got) return absl::OkStatus();
  }
  if (out->empty()) {
    out->swap(in_);  // no copy on the streaming path
  } else {
    out->append(in_);
  }
  in_.clear();
  return absl::OkStatus();
}

}  // namespace ferry::client::redis
