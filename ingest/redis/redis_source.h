// RedisSource: ferry as a replica of a Redis primary. A full resync's RDB goes to an
// RdbReceiver (the archive stores it as a snapshot); the command stream after it goes, one
// command per record, into a StreamSink; REPLCONF ACK reports only what the sink has
// acknowledged, so WAIT and min-replicas-to-write on the primary mean "durable in the archive".
//
// Positions are replication offsets (a record's end_pos is the offset after its command).
// Each full resync starts a new epoch of the stream at the RDB's offset: a resync is never
// a silent gap, and positions of different epochs are never compared.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "client/redis/replica_conn.h"
#include "client/redis/replication_file.h"
#include "pipeline/sink.h"

namespace ferry::ingest::redis {

struct RedisSourceOptions {
  client::redis::RedisEndpoint endpoint;
  int ack_interval_ms = 1000;  // REPLCONF ACK at least this often (and whenever acked moves)
  // A primary PINGs its replicas every repl-ping-replica-period (10 s by default), so a stream
  // silent this long is dead even when TCP has not said so (a stalled proxy, a pulled cable):
  // the source gives up with kUnavailable and reconnects (PSYNC continues). Redis's own
  // repl-timeout, with its default.
  int repl_timeout_ms = 60000;
  // Called once the stream is synchronised: full (after the RDB is stored) or partial, the
  // epoch and offset it continues from, and the replication id.
  std::function<void(bool full, pipeline::StreamPosition from, const std::string& replid)> on_sync;
};

// Receives each full resync's RDB.
class RdbReceiver {
 public:
  virtual ~RdbReceiver() = default;
  // A new snapshot for the RDB that starts the stream's epoch `at.epoch`, taken at replication
  // offset `at.offset` of `replid`.
  virtual absl::StatusOr<pipeline::SnapshotSink*> BeginRdb(pipeline::StreamPosition at, const std::string& replid) = 0;
  // Makes it durable. Called after the RDB's last byte, before any command of its epoch.
  virtual absl::Status CommitRdb() = 0;
  // Drops an RDB that did not arrive whole.
  virtual void AbortRdb() = 0;
};

// Counters for logs and status; read from other threads.
struct RedisSourceStats {
  std::atomic<uint64_t> offset{0};        // replication offset received
  std::atomic<uint64_t> acked_offset{0};  // last REPLCONF ACK sent
  std::atomic<uint64_t> commands{0};
  std::atomic<uint64_t> full_syncs{0};
  std::atomic<uint64_t> partial_syncs{0};
};

// Runs on one thread (Stream); RequestStop may be called from any thread.
class RedisSource {
 public:
  RedisSource(RedisSourceOptions options, pipeline::StreamSink* sink, RdbReceiver* rdb);
  ~RedisSource();

  // Connects, PSYNCs from `resume`, stores the RDB of a full resync, then streams commands
  // until RequestStop (drains the sink, sends a final ACK, returns OK) or an error:
  // kUnavailable (connection trouble: retry with the archive's new end), kDataLoss (a
  // malformed stream: nothing past the last whole command is acknowledged),
  // kPermissionDenied (AUTH).
  absl::Status Stream(const client::redis::RedisResume& resume);

  void RequestStop();
  const RedisSourceStats& stats() const { return stats_; }

 private:
  struct CommandStream;
  // PSYNCs from `resume`: stores the RDB of a full resync, or records a new replication id;
  // sets where the command stream continues (s->epoch, s->offset).
  absl::Status Synchronise(client::redis::ReplicaConnection& conn, const client::redis::RedisResume& resume, CommandStream* s);
  // Archives commands and sends ACKs until RequestStop or an error.
  absl::Status StreamCommands(client::redis::ReplicaConnection& conn, CommandStream& s);
  // Appends the whole commands `bytes` complete to the sink as one run; returns whether one
  // was a REPLCONF GETACK.
  absl::StatusOr<bool> ArchiveCommands(CommandStream& s, absl::string_view bytes);
  absl::Status ReceiveRdb(client::redis::ReplicaConnection& conn, uint32_t epoch, const client::redis::SyncStart& start);
  absl::Status Ack(client::redis::ReplicaConnection& conn, uint64_t offset);

  const RedisSourceOptions options_;
  pipeline::StreamSink* const sink_;
  RdbReceiver* const rdb_;
  int stop_fd_ = -1;
  RedisSourceStats stats_;
};

}  // namespace ferry::ingest::redis
