// The Redis source: the PSYNC handshake, a full resync's RDB into the RdbReceiver, then the
// command stream into the sink with REPLCONF ACKs of what the sink acknowledged.
#include "ingest/redis/redis_source.h"

#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/redis/command_parser.h"
#include "pipeline/check.h"
#include "pipeline/read_pacer.h"

namespace ferry::ingest::redis {

// The command stream between reads: where it stands, and what a read's commands go through.
struct RedisSource::CommandStream {
  uint32_t epoch = 0;
  uint64_t offset = 0;  // replication offset of the last whole command archived
  client::redis::CommandParser parser;
  client::redis::Command cmd;
  std::vector<pipeline::Record> run;  // one read's commands, handed to the sink together
};

RedisSource::RedisSource(RedisSourceOptions options, pipeline::StreamSink* sink, RdbReceiver* rdb)
    : options_(std::move(options)), sink_(sink), rdb_(rdb), stop_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

RedisSource::~RedisSource() {
  if (stop_fd_ >= 0) close(stop_fd_);
}

void RedisSource::RequestStop() {
  const uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
}

absl::Status RedisSource::Ack(client::redis::ReplicaConnection& conn, uint64_t offset) {
  FERRY_RETURN_IF_ERROR(conn.Send({"REPLCONF", "ACK", absl::StrCat(offset)}));
  stats_.acked_offset.store(offset, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status RedisSource::ReceiveRdb(client::redis::ReplicaConnection& conn, uint32_t epoch, const client::redis::SyncStart& start) {
  FERRY_ASSIGN_OR_RETURN(pipeline::SnapshotSink * snap, rdb_->BeginRdb({epoch, start.offset}, start.replid));
  absl::Status st = snap->BeginFile("dump.rdb", 0600, static_cast<int64_t>(std::time(nullptr)));
  if (st.ok()) st = conn.ReceiveRdb([&](absl::string_view bytes) { return snap->Write(bytes); }).status();
  if (st.ok()) st = snap->EndFile();
  if (st.ok()) st = rdb_->CommitRdb();
  if (!st.ok()) rdb_->AbortRdb();
  return st;
}

absl::Status RedisSource::Stream(const client::redis::RedisResume& resume) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<client::redis::ReplicaConnection> conn, client::redis::ReplicaConnection::Connect(options_.endpoint, stop_fd_));
  CommandStream s;
  FERRY_RETURN_IF_ERROR(Synchronise(*conn, resume, &s));
  return StreamCommands(*conn, s);
}

absl::Status RedisSource::Synchronise(client::redis::ReplicaConnection& conn, const client::redis::RedisResume& resume, CommandStream* s) {
  // PSYNC asks for the first byte we do not have: offset + 1.
  FERRY_ASSIGN_OR_RETURN(client::redis::SyncStart start,
                         conn.Psync(resume.empty ? "" : resume.replid, static_cast<int64_t>(resume.offset) + 1));
  s->epoch = resume.epoch;
  s->offset = resume.offset;
  std::string replid = resume.replid;
  if (start.full) {
    // Everything of the old epoch is durable before the new one begins at the RDB's offset.
    FERRY_RETURN_IF_ERROR(sink_->Drain());
    s->epoch = resume.epoch + 1;
    FERRY_RETURN_IF_ERROR(ReceiveRdb(conn, s->epoch, start));
    s->offset = start.offset;
    replid = start.replid;
    FERRY_RETURN_IF_ERROR(sink_->PutFile(client::redis::kReplicationFile, client::redis::FormatReplicationFile(s->epoch, s->offset, replid)));
    // The RDB is durable: the new epoch is acknowledged up to its offset.
    sink_->progress().Reset(s->offset);
    stats_.full_syncs.fetch_add(1, std::memory_order_relaxed);
  } else {
    if (!start.replid.empty() && start.replid != replid) {
      // The primary changed (failover, PSYNC2): same history, new id from here on.
      replid = start.replid;
      FERRY_RETURN_IF_ERROR(sink_->PutFile(client::redis::kReplicationFile, client::redis::FormatReplicationFile(s->epoch, s->offset, replid)));
    }
    stats_.partial_syncs.fetch_add(1, std::memory_order_relaxed);
  }
  stats_.offset.store(s->offset, std::memory_order_relaxed);
  if (options_.on_sync) options_.on_sync(start.full, {s->epoch, s->offset}, replid);
  return absl::OkStatus();
}

absl::Status RedisSource::StreamCommands(client::redis::ReplicaConnection& conn, CommandStream& s) {
  pipeline::StreamProgress& progress = sink_->progress();
  // The primary puts a replica online on its first ACK; WAIT counts only acked offsets.
  uint64_t acked = std::min(progress.Acked(), s.offset);
  FERRY_RETURN_IF_ERROR(Ack(conn, acked));
  auto last_ack = std::chrono::steady_clock::now();
  const auto ack_every = std::chrono::milliseconds(options_.ack_interval_ms);
  std::string buf;
  auto last_heard = std::chrono::steady_clock::now();
  const auto repl_timeout = std::chrono::milliseconds(options_.repl_timeout_ms);
  pipeline::ReadPacer pacer(stop_fd_);
  while (true) {
    // Wake at the next periodic ACK, and (below) whenever the sink reports progress.
    auto ms_to_ack = [&] {
      return std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::milliseconds>(
                                      last_ack + ack_every - std::chrono::steady_clock::now())
                                      .count());
    };
    pacer.Pace(sink_->commit_delay(), buf.size(), ms_to_ack());
    buf.clear();
    const int wait_ms = static_cast<int>(ms_to_ack());
    absl::Status st = conn.ReadStream(&buf, wait_ms, progress.notify_fd());
    if (absl::IsCancelled(st)) break;
    FERRY_RETURN_IF_ERROR(st);
    bool getack = false;
    if (buf.empty()) {
      if (std::chrono::steady_clock::now() - last_heard >= repl_timeout) {
        return absl::UnavailableError(absl::StrCat(
            "no bytes from the primary for ", options_.repl_timeout_ms / 1000.0,
            " s, not even its PING (repl_timeout): the connection is dead; reconnecting"));
      }
    } else {
      last_heard = std::chrono::steady_clock::now();
      FERRY_ASSIGN_OR_RETURN(getack, ArchiveCommands(s, buf));
    }
    progress.ConsumeNotification();
    const uint64_t now_acked = std::min(progress.Acked(), s.offset);
    const auto now = std::chrono::steady_clock::now();
    if (getack || now_acked != acked || now - last_ack >= ack_every) {
      acked = now_acked;
      FERRY_RETURN_IF_ERROR(Ack(conn, acked));
      last_ack = now;
    }
  }
  // Stop requested: make what we have durable and tell the primary.
  FERRY_RETURN_IF_ERROR(sink_->Drain());
  return Ack(conn, std::min(progress.Acked(), s.offset));
}

absl::StatusOr<bool> RedisSource::ArchiveCommands(CommandStream& s, absl::string_view bytes) {
  s.parser.Feed(bytes);
  const pipeline::UnixMicros arrival = pipeline::NowUnixMicros();
  // What one read brought goes to the sink as one run: one hand-over, not one per command.
  const uint64_t run_start = s.offset;
  bool getack = false;
  absl::Status parsed;
  while (true) {
    absl::StatusOr<bool> got = s.parser.Next(&s.cmd);
    if (!got.ok()) {
      parsed = got.status();  // the whole commands before the bad bytes are still archived
      break;
    }
    if (!*got) break;
    s.offset += s.cmd.raw.size();
    if (s.cmd.argv.size() >= 2 && strcasecmp(s.cmd.argv[0].c_str(), "REPLCONF") == 0 &&
        strcasecmp(s.cmd.argv[1].c_str(), "GETACK") == 0) {
      getack = true;
    }
    pipeline::Record& r = s.run.emplace_back();
    r.end_pos = s.offset;
    r.data_ts = arrival;  // Redis commands carry no time: arrival is theirs
    r.payload = std::move(s.cmd.raw);
  }
  const size_t commands = s.run.size();
  FERRY_RETURN_IF_ERROR(sink_->AppendRun({s.epoch, run_start}, &s.run));
  stats_.commands.fetch_add(commands, std::memory_order_relaxed);
  stats_.offset.store(s.offset, std::memory_order_relaxed);
  FERRY_RETURN_IF_ERROR(parsed);
  return getack;
}

}  // namespace ferry::ingest::redis
