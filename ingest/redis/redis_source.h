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
#include "ingest/redis/replica_conn.h"
#include "pipeline/sink.h"

namespace ferry::ingest::redis {

struct RedisSourceOptions {
  RedisEndpoint endpoint;
  int ack_interval_ms = 1000;  // REPLCONF ACK at least this often (and whenever acked moves)
  // A primary PINGs its replicas every repl-ping-replica-period (10 s by default), so a stream
  // silent this long is dead even when TCP has not said so (a stalled proxy, a pulled cable):
  // the source gives up with kUnavailable and reconnects (PSYNC continues). Redis's own
  // repl-timeout, with its default.
  int repl_timeout_ms = 60000;
  // Called once the stream is synchronised: full (after the RDB is stored) or partial, the
  // epoch and offset it continues from, and the replication id.
  std::function<void(bool full, uint32_t epoch, uint64_t offset, const std::string& replid)> on_sync;
};

// Where the archive's copy of the stream ends, to PSYNC from.
struct RedisResume {
  bool empty = true;    // no replication id to continue from: PSYNC ? -1
  uint32_t epoch = 0;   // the archive epoch the stream ends in (a full resync starts epoch + 1)
  uint64_t offset = 0;  // replication offset it ends at
  std::string replid;   // replication id that offset belongs to
};

// The side file ("replication") that records the replication id of the current epoch:
// "<epoch> <offset> <replid>\n", rewritten at every full resync and id change.
inline constexpr char kReplicationFile[] = "replication";
std::string FormatReplicationFile(uint32_t epoch, uint64_t offset, const std::string& replid);
// kDataLoss when the text is not such a line.
absl::StatusOr<RedisResume> ParseReplicationFile(absl::string_view text);

// Receives each full resync's RDB.
class RdbReceiver {
 public:
  virtual ~RdbReceiver() = default;
  // A new snapshot for the RDB of `epoch`, taken at `offset` of `replid`.
  virtual absl::StatusOr<pipeline::SnapshotSink*> BeginRdb(uint32_t epoch, const std::string& replid,
                                                           uint64_t offset) = 0;
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
  absl::Status Stream(const RedisResume& resume);

  void RequestStop();
  const RedisSourceStats& stats() const { return stats_; }

 private:
  absl::Status ReceiveRdb(ReplicaConnection& conn, uint32_t epoch, const SyncStart& start);
  absl::Status Ack(ReplicaConnection& conn, uint64_t offset);

  const RedisSourceOptions options_;
  pipeline::StreamSink* const sink_;
  RdbReceiver* const rdb_;
  int stop_fd_ = -1;
  RedisSourceStats stats_;
};

}  // namespace ferry::ingest::redis
