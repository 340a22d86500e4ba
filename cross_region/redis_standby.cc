#include "cross_region/redis_standby.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ingest/redis/client.h"
#include "ingest/redis/command_parser.h"
#include "ingest/redis/redis_source.h"
#include "pipeline/check.h"
#include "storage/archive.h"
#include "storage/snapshot_store.h"

namespace ferry::cross_region {

namespace {

absl::Status SendAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("standby connection: send: ", strerror(errno)));
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// The i-th argument of a command from its raw RESP bytes (CommandParser keeps only the
// first two): "*3\r\n$5\r\nPSYNC\r\n$40\r\n<id>\r\n$2\r\n-1\r\n" -> tokens 2, 4, 6, ...
std::string Arg(const ingest::redis::Command& c, size_t i) {
  std::vector<absl::string_view> tokens = absl::StrSplit(c.raw, "\r\n");
  const size_t at = 2 + 2 * i;
  return at < tokens.size() ? std::string(tokens[at]) : "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisStandbyFeeder>> RedisStandbyFeeder::Start(RedisStandbyOptions options) {
  FERRY_RETURN_IF_ERROR(ingest::redis::ParseRedisAddress(options.standby).status());
  std::unique_ptr<RedisStandbyFeeder> f(new RedisStandbyFeeder(std::move(options)));
  f->listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (f->listen_fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(f->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(f->listen_fd_, 4) != 0 ||
      getsockname(f->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::InternalError(absl::StrCat("listen on 127.0.0.1 for the standby Redis: ", strerror(errno)));
  }
  f->port_ = ntohs(addr.sin_port);
  f->thread_ = std::thread([p = f.get()] { p->Run(); });
  return f;
}

RedisStandbyFeeder::~RedisStandbyFeeder() { Stop(); }

void RedisStandbyFeeder::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
  listen_fd_ = -1;
}

absl::Status RedisStandbyFeeder::PointStandbyHere() {
  FERRY_ASSIGN_OR_RETURN(ingest::redis::RedisEndpoint standby, ingest::redis::ParseRedisAddress(options_.standby));
  standby.timeout_ms = 2000;
  auto port = ingest::redis::RedisInfoField(standby, "master_port");
  auto host = ingest::redis::RedisInfoField(standby, "master_host");
  if (port.ok() && host.ok() && *port == absl::StrCat(port_) && *host == "127.0.0.1") return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(ingest::redis::RunRedisCommand(standby, {"REPLICAOF", "127.0.0.1", absl::StrCat(port_)}).status());
  spdlog::info("source={} event=standby_redis_attached standby={} feeder=127.0.0.1:{}", LogName(),
               options_.standby, port_);
  return absl::OkStatus();
}

void RedisStandbyFeeder::Run() {
  absl::StatusCode last = absl::StatusCode::kOk;
  absl::Time next_check = absl::InfinitePast();
  while (!stop_) {
    if (absl::Now() >= next_check) {
      // Again and again: a standby that restarted from its config may have forgotten us.
      absl::Status st = PointStandbyHere();
      if (!st.ok() && st.code() != last) {
        spdlog::warn("source={} event=standby_redis_unreachable standby={} error=\"{}\" action=retrying",
                     LogName(), options_.standby, std::string(st.message()));
      }
      last = st.code();
      next_check = absl::Now() + absl::Seconds(5);
    }
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    absl::Status st = Serve(fd);
    close(fd);
    if (!st.ok() && !stop_) {
      spdlog::warn("source={} event=standby_redis_disconnected error=\"{}\"", LogName(), std::string(st.message()));
    }
  }
}

absl::StatusOr<std::string> RedisStandbyFeeder::ResolveSource(const storage::Archive& archive) const {
  if (!options_.source.empty()) return options_.source;
  std::vector<std::string> redis;
  for (const std::string& s : options_.sources) {
    auto identity = archive.GetIdentity(s);
    if (identity.ok() && (*identity)["kind"] == "redis") redis.push_back(s);
  }
  if (redis.empty()) return absl::UnavailableError("no Redis source mirrored yet");
  if (redis.size() > 1) {
    return absl::FailedPreconditionError(absl::StrCat("several Redis sources are mirrored; name one: apply_redis = \"",
                                                      redis.front(), "=HOST:PORT\""));
  }
  return redis.front();
}

absl::Status RedisStandbyFeeder::Serve(int fd) {
  // The standby's handshake, up to its PSYNC.
  ingest::redis::CommandParser parser;
  ingest::redis::Command c;
  std::string replid;
  int64_t psync_offset = -1;
  char buf[16384];
  while (!stop_ && replid.empty()) {
    FERRY_ASSIGN_OR_RETURN(bool have, parser.Next(&c));
    if (!have) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return absl::UnavailableError("standby closed the connection during its handshake");
      parser.Feed(absl::string_view(buf, static_cast<size_t>(n)));
      continue;
    }
    const std::string name = absl::AsciiStrToUpper(c.argv.empty() ? "" : c.argv[0]);
    if (name == "PING") {
      FERRY_RETURN_IF_ERROR(SendAll(fd, "+PONG\r\n"));
    } else if (name == "REPLCONF" || name == "AUTH") {
      FERRY_RETURN_IF_ERROR(SendAll(fd, "+OK\r\n"));
    } else if (name == "PSYNC" || name == "SYNC") {
      replid = name == "PSYNC" ? Arg(c, 1) : "?";
      if (!absl::SimpleAtoi(Arg(c, 2), &psync_offset)) psync_offset = -1;
    } else {
      FERRY_RETURN_IF_ERROR(SendAll(fd, "-ERR this is ferry's standby feeder: it serves replication only\r\n"));
    }
  }
  if (stop_) return absl::OkStatus();

  // What the archive can serve: the last epoch, from the standby's offset or from a snapshot.
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(options_.archive_path, storage::ArchiveOptions{}));
  FERRY_ASSIGN_OR_RETURN(const std::string source, ResolveSource(*archive));
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, archive->Stream(source, pipeline::StreamKind::kRedisCommands));
  if (log->empty()) return absl::UnavailableError("nothing mirrored yet");
  const uint32_t epoch = log->frames().back().header.epoch;
  std::string epoch_replid;
  if (auto file = log->GetFile(ingest::redis::kReplicationFile); file.ok()) {
    auto rec = ingest::redis::ParseReplicationFile(*file);
    if (rec.ok() && rec->epoch == epoch) epoch_replid = rec->replid;
  }
  uint64_t epoch_start = UINT64_MAX;
  for (const auto& f : log->frames()) {
    if (f.header.epoch == epoch) epoch_start = std::min<uint64_t>(epoch_start, f.header.start_pos);
  }
  const uint64_t end = log->frames().back().header.end_pos;
  uint64_t pos = 0;
  if (!epoch_replid.empty() && replid == epoch_replid && psync_offset >= 1 &&
      static_cast<uint64_t>(psync_offset - 1) >= epoch_start && static_cast<uint64_t>(psync_offset - 1) <= end) {
    // PSYNC offsets name the next byte wanted, counted from 1.
    pos = static_cast<uint64_t>(psync_offset - 1);
    FERRY_RETURN_IF_ERROR(SendAll(fd, absl::StrCat("+CONTINUE ", epoch_replid, "\r\n")));
    stats_.partial_syncs.fetch_add(1);
    spdlog::info("source={} event=standby_redis_sync sync=partial offset={}", source, pos);
  } else {
    FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive->SnapshotDir(source), false));
    const storage::SnapshotManifest* snap = nullptr;
    for (const auto& m : store->snapshots()) {
      uint64_t at = 0;
      if (m.Get("kind") == "redis-rdb" && m.Get("epoch") == absl::StrCat(epoch) && absl::SimpleAtoi(m.Get("offset"), &at) &&
          at >= epoch_start && at <= end && !m.entries.empty()) {
        snap = &m;  // oldest first: the last match is the newest
      }
    }
    if (snap == nullptr) return absl::UnavailableError(absl::StrCat("no RDB snapshot of epoch ", epoch, " mirrored yet"));
    FERRY_RETURN_IF_ERROR(absl::SimpleAtoi(snap->Get("offset"), &pos) ? absl::OkStatus() : absl::DataLossError("offset"));
    const std::string id = epoch_replid.empty() ? snap->Get("replid") : epoch_replid;
    const storage::SnapshotEntry& rdb = snap->entries.front();
    FERRY_RETURN_IF_ERROR(SendAll(fd, absl::StrCat("+FULLRESYNC ", id, " ", pos, "\r\n$", rdb.size, "\r\n")));
    FERRY_RETURN_IF_ERROR(store->ReadFile(rdb, [&](absl::string_view bytes) { return SendAll(fd, bytes); }));
    stats_.full_syncs.fetch_add(1);
    spdlog::info("source={} event=standby_redis_sync sync=full snapshot={} offset={}", source, snap->id, pos);
  }
  stats_.served_offset = pos;

  // The commands from pos on, then whatever the mirror appends, until the epoch ends (a full
  // resync upstream: the standby reconnects and gets the new epoch's snapshot) or it leaves.
  std::string scratch;
  ingest::redis::CommandParser acks;
  while (!stop_) {
    bool sent = false;
    for (const storage::FrameLocation* f = log->FirstFrameAfter(epoch, pos); f != nullptr;
         f = log->FirstFrameAfter(epoch, pos)) {
      FERRY_ASSIGN_OR_RETURN(auto records, log->ReadRecords(*f, &scratch));
      uint64_t start = f->header.start_pos;
      for (const auto& r : records) {
        if (start >= pos) FERRY_RETURN_IF_ERROR(SendAll(fd, r.payload));
        start = r.end_pos;
      }
      pos = f->header.end_pos;
      stats_.served_offset = pos;
      sent = true;
    }
    if (!log->empty() && log->frames().back().header.epoch != epoch) {
      return absl::UnavailableError("the stream started a new epoch (a full resync upstream): standby resyncs");
    }
    // The standby's REPLCONF ACKs, for the stats; a closed connection ends the session.
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, sent ? 0 : 50) > 0) {
      const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0) return absl::UnavailableError("standby closed the connection");
      if (n > 0) {
        acks.Feed(absl::string_view(buf, static_cast<size_t>(n)));
        while (true) {
          auto have = acks.Next(&c);
          if (!have.ok() || !*have) break;
          uint64_t off = 0;
          if (c.argc >= 3 && absl::SimpleAtoi(Arg(c, 2), &off)) stats_.acked_offset = off;
        }
      }
    }
    FERRY_RETURN_IF_ERROR(log->Refresh());
  }
  return absl::OkStatus();
}

}  // namespace ferry::cross_region
