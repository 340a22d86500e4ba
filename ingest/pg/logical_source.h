// PgLogicalSource: streams row-level changes from a logical slot (pgoutput) into the
// pg-changes stream of a StreamSink, one record per transaction (or part of a large one).
// A new slot's exported snapshot is read first, as 'r' events. Only what the sink has made
// durable is confirmed to the slot.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/pg/replication_conn.h"
#include "client/pg/sql.h"
#include "pipeline/change_event.h"
#include "pipeline/sink.h"

namespace ferry::ingest::pg {

struct PgOutputMessage;  // pgoutput.h

struct PgLogicalOptions {
  std::string conninfo;  // must name the database to decode
  std::string slot;
  std::string publication;
  // When ferry creates the publication: these tables ("schema.table" or "table"), or all
  // tables when empty. An existing publication is used as it is.
  std::vector<std::string> tables;
  std::string application_name;
  bool create_slot = true;
  bool slot_failover = false;  // create the slot with FAILOVER (17+)
  int status_interval_ms = 10000;
  // A transaction's record is cut into parts of about this size; a streamed transaction
  // larger than it waits for its commit in a SpillFile ($TMPDIR, else /tmp), not in memory.
  size_t max_record_bytes = 1 << 20;
  size_t snapshot_fetch_rows = 2000;  // rows per FETCH while reading the initial snapshot
};

// Counters for logs and status; read from other threads.
struct PgLogicalStats {
  std::atomic<uint64_t> received_lsn{0};        // last commit end received
  std::atomic<uint64_t> reported_flush_lsn{0};  // confirmed to the slot
  std::atomic<uint64_t> transactions{0};
  std::atomic<uint64_t> events{0};
  std::atomic<uint64_t> snapshot_rows{0};
};

// Runs on one thread (Stream); RequestStop may be called from any thread.
class PgLogicalSource {
 public:
  static constexpr uint32_t kEpoch = 1;  // the pg-changes stream has a single epoch

  PgLogicalSource(PgLogicalOptions options, pipeline::StreamSink* sink);
  ~PgLogicalSource();

  // Connects (replication and SQL sessions) and makes sure the publication exists.
  absl::Status Connect();

  // Streams until RequestStop (drains, confirms, returns OK) or an error: kUnavailable
  // (connection lost: call again with the archive's new end), kDataLoss (a malformed message),
  // kFailedPrecondition (the slot is gone while the archive has changes: they are lost).
  // `archive_end` is the stream's durable end position (0 when empty; see ChangeBatch).
  absl::Status Stream(uint64_t archive_end);

  void RequestStop();
  const PgLogicalStats& stats() const { return stats_; }

 private:
  struct Change;
  struct Txn;
  // Checks the slot against the archive, creating it (and taking its snapshot) when there is
  // none yet; returns where streaming starts.
  absl::StatusOr<pipeline::Lsn> PrepareSlot();
  // START_REPLICATION's pgoutput options for this server.
  std::string StreamOptions() const;
  absl::Status TakeSnapshot(const client::pg::LogicalSlotCreated& slot);
  absl::Status ReadTable(const std::string& schema, const std::string& table, Txn* txn);
  // Handles the messages the connection has buffered; kUnavailable when the server ends the
  // COPY. Adds the bytes read to *burst_bytes.
  absl::Status ReadMessages(client::pg::SilenceWatch& silence, size_t* burst_bytes);
  // One pgoutput message; `lsn` is its XLogData's start (a change's own WAL position).
  absl::Status Handle(absl::string_view payload, uint64_t lsn);
  // Handle's steps, one per message type.
  absl::Status OnBegin(const PgOutputMessage& m);
  absl::Status OnRelation(PgOutputMessage& m);
  absl::Status OnRowChange(PgOutputMessage& m, uint64_t lsn);
  absl::Status OnTruncate(const PgOutputMessage& m, uint64_t lsn);
  absl::Status OnLogicalMessage(PgOutputMessage& m);
  absl::Status OnStreamCommit(const PgOutputMessage& m);
  absl::Status OnStreamAbort(const PgOutputMessage& m);
  // The transaction a data message of type `type` belongs to: the open one, or the streamed
  // one by xid.
  absl::StatusOr<Txn*> CurrentTxn(char type);
  // The relation as its last Relation message described it.
  absl::StatusOr<std::shared_ptr<const pipeline::ChangeRelation>> FindRelation(uint32_t relid) const;
  // Adds a change of sub-transaction `subxid` to `txn`, emitting a part when it has grown.
  absl::Status AddChange(Txn* txn, uint32_t subxid, Change&& c);
  // Ends `txn` at its commit (commit_lsn, end_lsn, ts of a Commit or Stream Commit message).
  absl::Status CommitTxn(std::unique_ptr<Txn> txn, const PgOutputMessage& m);
  // Appends the transaction's buffered events as one record; `last` ends the transaction at
  // `end_lsn` (its commit record's end).
  absl::Status EmitPart(Txn* txn, bool last, uint64_t end_lsn);
  // The buffered events as a batch (with the relations they use), leaving none buffered.
  pipeline::ChangeBatch TakeBatch(Txn* txn);
  // Appends `b` as the transaction's next record (EmitPart's second half).
  absl::Status AppendBatch(Txn* txn, pipeline::ChangeBatch b, bool last, uint64_t end_lsn);
  // A streamed transaction's buffered events go to its spill file.
  absl::Status Spill(Txn* txn);
  // At its commit: the spilled parts, read back in order without aborted sub-transactions.
  absl::Status EmitSpilled(Txn* txn);
  absl::Status SendFeedback(bool reply_requested = false);
  bool StopRequested() const;
  uint64_t ConfirmableLsn() const;

  const PgLogicalOptions options_;
  pipeline::StreamSink* const sink_;
  std::unique_ptr<client::pg::ReplicationConnection> conn_;
  std::unique_ptr<client::pg::SqlSession> sql_;
  std::string database_;
  int stop_fd_ = -1;
  PgLogicalStats stats_;

  uint64_t tail_pos_ = 0;        // the stream position the next record starts at
  uint64_t skip_below_lsn_ = 0;  // transactions committed before this are archived already
  uint64_t idle_lsn_ = 0;        // the server's position in its last keepalive
  uint64_t last_sent_flush_ = 0;
  std::map<uint32_t, std::shared_ptr<const pipeline::ChangeRelation>> relations_;
  std::map<uint32_t, std::string> type_names_;  // non-builtin type OID -> "schema.name"
  std::unique_ptr<Txn> open_;                   // between Begin and Commit
  bool in_stream_ = false;
  uint32_t stream_xid_ = 0;
  std::map<uint32_t, std::unique_ptr<Txn>> streamed_;  // in-progress transactions, by top-level xid
};

}  // namespace ferry::ingest::pg
