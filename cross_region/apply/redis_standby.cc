// The standby feeder: a loopback listener that speaks a Redis primary's side of replication,
// serving the mirror's archived stream (see redis_standby.h).
#include "cross_region/apply/redis_standby.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/redis/client.h"
#include "client/redis/command_parser.h"
#include "client/redis/replication_file.h"
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
std::string Arg(const client::redis::Command& c, size_t i) {
  std::vector<absl::string_view> tokens = absl::StrSplit(c.raw, "\r\n");
  const size_t at = 2 + 2 * i;
  return at < tokens.size() ? std::string(tokens[at]) : "";
}

// What the standby asked for: PSYNC <replid> <offset> (SYNC: replid "?", offset -1).
struct SyncRequest {
  std::string replid;
  int64_t offset = -1;
};

// The archive's last epoch in a (non-empty) stream log: what the feeder can serve.
struct EpochSpan {
  uint32_t epoch = 0;
  std::string replid;           // the epoch's replication id, when the replication file names it
  uint64_t start = UINT64_MAX;  // the epoch's first archived position
  uint64_t end = 0;             // the stream's end
};

EpochSpan LastEpoch(const storage::StreamLog& log) {
  EpochSpan e;
  e.epoch = log.frames().back().header.epoch;
  if (auto file = log.GetFile(client::redis::kReplicationFile); file.ok()) {
    auto rec = client::redis::ParseReplicationFile(*file);
    if (rec.ok() && rec->epoch == e.epoch) e.replid = rec->replid;
  }
  for (const auto& f : log.frames()) {
    if (f.header.epoch == e.epoch) e.start = std::min<uint64_t>(e.start, f.header.start_pos);
  }
  e.end = log.frames().back().header.end_pos;
  return e;
}

// The epoch's newest RDB snapshot taken within what the log holds of it; null if none.
const storage::SnapshotManifest* NewestRdbSnapshot(const storage::SnapshotStore& store, const EpochSpan& e) {
  const storage::SnapshotManifest* snap = nullptr;
  for (const auto& m : store.snapshots()) {
    uint64_t at = 0;
    if (m.Get("kind") == "redis-rdb" && m.Get("epoch") == absl::StrCat(e.epoch) &&
        absl::SimpleAtoi(m.Get("offset"), &at) && at >= e.start && at <= e.end && !m.entries.empty()) {
      snap = &m;  // oldest first: the last match is the newest
    }
  }
  return snap;
}

// One standby connection: its handshake up to PSYNC, the sync (partial or full), then the
// commands as the mirror appends them.
class StandbySession {
 public:
  StandbySession(int fd, const std::atomic<bool>& stop, RedisStandbyStats& stats)
      : fd_(fd), stop_(stop), stats_(stats) {}

  // Answers the standby's handshake up to its PSYNC (or SYNC). Returns an empty replid when
  // the feeder stops first.
  absl::StatusOr<SyncRequest> AwaitSyncRequest();
  // Answers `req`: +CONTINUE when the standby's offset is in the epoch, else +FULLRESYNC with
  // the epoch's newest RDB snapshot. Returns the position the commands follow from.
  absl::StatusOr<uint64_t> Sync(const storage::Archive& archive, const std::string& source, const EpochSpan& e,
                                const SyncRequest& req);
  // The commands from pos on, then whatever the mirror appends, until the epoch ends (a full
  // resync upstream: the standby reconnects and gets the new epoch's snapshot) or it leaves.
  absl::Status Feed(storage::StreamLog& log, uint32_t epoch, uint64_t pos);

 private:
  absl::StatusOr<uint64_t> FullResync(const storage::Archive& archive, const std::string& source, const EpochSpan& e);
  // The standby's REPLCONF ACKs, for the stats; a closed connection ends the session.
  absl::Status ReadAcks(int timeout_ms);

  const int fd_;
  const std::atomic<bool>& stop_;
  RedisStandbyStats& stats_;
  client::redis::CommandParser acks_;
  client::redis::Command ack_;
  char buf_[16384];
};

absl::StatusOr<SyncRequest> StandbySession::AwaitSyncRequest() {
  client::redis::CommandParser parser;
  client::redis::Command c;
  SyncRequest req;
  while (!stop_ && req.replid.empty()) {
    FERRY_ASSIGN_OR_RETURN(bool have, parser.Next(&c));
    if (!have) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      const ssize_t n = recv(fd_, buf_, sizeof(buf_), 0);
      if (n <= 0) return absl::UnavailableError("standby closed the connection during its handshake");
      parser.Feed(absl::string_view(buf_, static_cast<size_t>(n)));
      continue;
    }
    const std::string name = absl::AsciiStrToUpper(c.argv.empty() ? "" : c.argv[0]);
    if (name == "PING") {
      FERRY_RETURN_IF_ERROR(SendAll(fd_, "+PONG\r\n"));
    } else if (name == "REPLCONF" || name == "AUTH") {
      FERRY_RETURN_IF_ERROR(SendAll(fd_, "+OK\r\n"));
    } else if (name == "PSYNC" || name == "SYNC") {
      req.replid = name == "PSYNC" ? Arg(c, 1) : "?";
      if (!absl::SimpleAtoi(Arg(c, 2), &req.offset)) req.offset = -1;
    } else {
      FERRY_RETURN_IF_ERROR(SendAll(fd_, "-ERR this is ferry's standby feeder: it serves replication only\r\n"));
    }
  }
  return req;
}

absl::StatusOr<uint64_t> StandbySession::Sync(const storage::Archive& archive, const std::string& source,
                                              const EpochSpan& e, const SyncRequest& req) {
  if (e.replid.empty() || req.replid != e.replid || req.offset < 1 ||
      static_cast<uint64_t>(req.offset - 1) < e.start || static_cast<uint64_t>(req.offset - 1) > e.end) {
    return FullResync(archive, source, e);
  }
  // PSYNC offsets name the next byte wanted, counted from 1.
  const uint64_t pos = static_cast<uint64_t>(req.offset - 1);
  FERRY_RETURN_IF_ERROR(SendAll(fd_, absl::StrCat("+CONTINUE ", e.replid, "\r\n")));
  stats_.partial_syncs.fetch_add(1);
  spdlog::info("source={} event=standby_redis_sync sync=partial offset={}", source, pos);
  return pos;
}

absl::StatusOr<uint64_t> StandbySession::FullResync(const storage::Archive& archive, const std::string& source,
                                                    const EpochSpan& e) {
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive.SnapshotDir(source), false));
  const storage::SnapshotManifest* snap = NewestRdbSnapshot(*store, e);
  if (snap == nullptr) {
    return absl::UnavailableError(absl::StrCat("no RDB snapshot of epoch ", e.epoch, " mirrored yet"));
  }
  uint64_t pos = 0;
  FERRY_RETURN_IF_ERROR(absl::SimpleAtoi(snap->Get("offset"), &pos) ? absl::OkStatus() : absl::DataLossError("offset"));
  const std::string id = e.replid.empty() ? snap->Get("replid") : e.replid;
  const storage::SnapshotEntry& rdb = snap->entries.front();
  FERRY_RETURN_IF_ERROR(SendAll(fd_, absl::StrCat("+FULLRESYNC ", id, " ", pos, "\r\n$", rdb.size, "\r\n")));
  FERRY_RETURN_IF_ERROR(store->ReadFile(rdb, [&](absl::string_view bytes) { return SendAll(fd_, bytes); }));
  stats_.full_syncs.fetch_add(1);
  spdlog::info("source={} event=standby_redis_sync sync=full snapshot={} offset={}", source, snap->id, pos);
  return pos;
}

absl::Status StandbySession::Feed(storage::StreamLog& log, uint32_t epoch, uint64_t pos) {
  std::string scratch;
  while (!stop_) {
    bool sent = false;
    for (const storage::FrameLocation* f = log.FirstFrameAfter(epoch, pos); f != nullptr;
         f = log.FirstFrameAfter(epoch, pos)) {
      FERRY_ASSIGN_OR_RETURN(auto records, log.ReadRecords(*f, &scratch));
      uint64_t start = f->header.start_pos;
      for (const auto& r : records) {
        if (start >= pos) FERRY_RETURN_IF_ERROR(SendAll(fd_, r.payload));
        start = r.end_pos;
      }
      pos = f->header.end_pos;
      stats_.served_offset = pos;
      sent = true;
    }
    if (!log.empty() && log.frames().back().header.epoch != epoch) {
      return absl::UnavailableError("the stream started a new epoch (a full resync upstream): standby resyncs");
    }
    FERRY_RETURN_IF_ERROR(ReadAcks(sent ? 0 : 50));
    FERRY_RETURN_IF_ERROR(log.Refresh());
  }
  return absl::OkStatus();
}

absl::Status StandbySession::ReadAcks(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return absl::OkStatus();
  const ssize_t n = recv(fd_, buf_, sizeof(buf_), MSG_DONTWAIT);
  if (n == 0) return absl::UnavailableError("standby closed the connection");
  if (n < 0) return absl::OkStatus();
  acks_.Feed(absl::string_view(buf_, static_cast<size_t>(n)));
  while (true) {
    auto have = acks_.Next(&ack_);
    if (!have.ok() || !*have) break;
    uint64_t off = 0;
    if (ack_.argc >= 3 && absl::SimpleAtoi(Arg(ack_, 2), &off)) stats_.acked_offset = off;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisStandbyFeeder>> RedisStandbyFeeder::Start(RedisStandbyOptions options) {
  FERRY_RETURN_IF_ERROR(client::redis::ParseRedisAddress(options.standby).status());
  std::unique_ptr<RedisStandbyFeeder> f(new RedisStandbyFeeder(std::move(options)));
  f->listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (f->listen_fd_ < 0) return absl::ErrnoToStatus(errno, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(f->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(f->listen_fd_, 4) != 0 ||
      getsockname(f->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::ErrnoToStatus(errno, "listen on 127.0.0.1 for the standby Redis");
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
  FERRY_ASSIGN_OR_RETURN(client::redis::RedisEndpoint standby, client::redis::ParseRedisAddress(options_.standby));
  standby.timeout_ms = 2000;
  auto port = client::redis::RedisInfoField(standby, "master_port");
  auto host = client::redis::RedisInfoField(standby, "master_host");
  if (port.ok() && host.ok() && *port == absl::StrCat(port_) && *host == "127.0.0.1") return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(client::redis::RunRedisCommand(standby, {"REPLICAOF", "127.0.0.1", absl::StrCat(port_)}).status());
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
  StandbySession session(fd, stop_, stats_);
  FERRY_ASSIGN_OR_RETURN(const SyncRequest req, session.AwaitSyncRequest());
  if (stop_) return absl::OkStatus();
  // What the archive can serve: the last epoch, from the standby's offset or from a snapshot.
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(options_.archive_path, storage::ArchiveOptions{}));
  FERRY_ASSIGN_OR_RETURN(const std::string source, ResolveSource(*archive));
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, archive->Stream(source, pipeline::StreamKind::kRedisCommands));
  if (log->empty()) return absl::UnavailableError("nothing mirrored yet");
  const EpochSpan epoch = LastEpoch(*log);
  FERRY_ASSIGN_OR_RETURN(const uint64_t pos, session.Sync(*archive, source, epoch, req));
  stats_.served_offset = pos;
  return session.Feed(*log, epoch.epoch, pos);
}

}  // namespace ferry::cross_region
