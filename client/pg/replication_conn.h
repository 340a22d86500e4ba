// A PostgreSQL replication-protocol connection (libpq, replication=true): the commands a
// physical WAL receiver needs and the CopyBoth message loop. Protocol facts: docs/protocols.md,
// "Streaming messages" and "CopyBoth at the end of a timeline". No libpq type appears outside client/.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "client/pg/sql.h"
#include "client/pg/sync_standby_names.h"  // NamesSynchronousStandby, for callers
#include "pipeline/position.h"

namespace ferry::client::pg {

struct SystemInfo {
  uint64_t system_id = 0;
  pipeline::TimelineId timeline;
  pipeline::Lsn xlogpos;
  uint64_t segment_bytes = 0;  // SHOW wal_segment_size
  int server_version = 0;      // 180004 for 18.4
};

struct SlotInfo {
  bool exists = false;
  pipeline::Lsn restart_lsn;        // invalid (0/0) when WAL is not reserved
  pipeline::TimelineId restart_tli;
};

struct TimelineHistoryFile {
  std::string filename;  // e.g. "00000002.history"
  std::string content;
};

// Where a historic timeline ended: the server's reply after its CopyDone.
struct TimelineEnd {
  pipeline::TimelineId next_tli;
  pipeline::Lsn next_start;
};

// One message read from the CopyBoth stream.
struct CopyMessage {
  enum class Kind { kNone, kXLogData, kKeepalive, kCopyDone } kind = Kind::kNone;
  pipeline::Lsn data_start;  // XLogData
  pipeline::Lsn wal_end;     // XLogData and keepalive
  bool reply_requested = false;
  absl::string_view payload;  // XLogData bytes; valid until the next ReadMessage
};

// The WAL positions of a base backup: replay from `start` must reach `end` to be consistent.
struct BackupPoints {
  pipeline::Lsn start;
  pipeline::TimelineId start_tli;
  pipeline::Lsn end;
  pipeline::TimelineId end_tli;
  uint64_t estimated_bytes = 0;  // the server's size estimate (PROGRESS), 0 if none
};

// A logical slot just created: where it streams from and the snapshot it exported (usable by
// other sessions with SET TRANSACTION SNAPSHOT until this connection runs its next command).
struct LogicalSlotCreated {
  pipeline::Lsn consistent_point;
  std::string snapshot_name;
};

// Notices a streaming connection that is dead although TCP has not said so (a stalled proxy,
// a pulled cable, a server that stops sending). A live server answers a status message that
// asks for a reply at once, so: after half the timeout without any message the source asks
// (ShouldAsk), and when half the timeout more passes without an answer Check gives
// kUnavailable, which reconnects. Only an unanswered request counts, so time the source spent
// blocked elsewhere (back-pressure, a full disk) never looks like a dead server. The timeout is
// the server's wal_sender_timeout (the silence it allows us), 60 s when disabled.
class SilenceWatch {
 public:
  SilenceWatch(int64_t timeout_ms, int64_t now_ms)
      : timeout_ms_(timeout_ms > 0 ? timeout_ms : 60000), last_ms_(now_ms) {}
  void Heard(int64_t now_ms) {
    last_ms_ = now_ms;
    asked_ = false;
  }
  // True once per silence, when it is time to ask the server for a reply.
  bool ShouldAsk(int64_t now_ms) {
    if (asked_ || now_ms - last_ms_ < timeout_ms_ / 2) return false;
    asked_ = true;
    asked_ms_ = now_ms;
    return true;
  }
  absl::Status Check(int64_t now_ms) const;
  // When ShouldAsk or Check next has something to say.
  int64_t NextDeadline() const { return (asked_ ? asked_ms_ : last_ms_) + timeout_ms_ / 2; }

 private:
  int64_t timeout_ms_;
  int64_t last_ms_;
  bool asked_ = false;
  int64_t asked_ms_ = 0;
};

// Not thread-safe. Errors: kUnavailable for a lost or refused connection (retry),
// kFailedPrecondition for what an operator must fix (permissions, missing slot, wrong mode).
class ReplicationConnection {
 public:
  // Connects with replication=true (physical) or replication=database (`logical`: logical
  // decoding needs a database) and the given application_name (what
  // synchronous_standby_names matches). `session_options` (libpq's "options", e.g.
  // "-c TimeZone=UTC") replaces any the conninfo sets.
  static absl::StatusOr<std::unique_ptr<ReplicationConnection>> Connect(
      const std::string& conninfo, const std::string& application_name, bool logical = false,
      const std::string& session_options = "");
  ~ReplicationConnection();

  absl::StatusOr<SystemInfo> IdentifySystem();
  // SHOW `setting`: the server's value as text; kUnavailable after `silence_ms` without an answer.
  absl::StatusOr<std::string> Show(absl::string_view setting, int silence_ms = kServerSilenceMs);
  // The server's wal_sender_timeout in ms (SHOW); 0 when it is disabled.
  absl::StatusOr<int64_t> SenderTimeoutMillis();
  absl::StatusOr<SlotInfo> ReadSlot(const std::string& slot);
  absl::Status CreatePhysicalSlot(const std::string& slot);
  // CREATE_REPLICATION_SLOT s LOGICAL pgoutput, exporting its snapshot; with `failover`
  // (17+; kFailedPrecondition before) a slot that standbys syncing slots keep.
  absl::StatusOr<LogicalSlotCreated> CreateLogicalSlot(const std::string& slot, bool failover = false);
  absl::Status DropSlot(const std::string& slot);
  // The server's version number (150004 for 15.4).
  int ServerVersion() const;
  absl::StatusOr<TimelineHistoryFile> TimelineHistory(pipeline::TimelineId tli);

  // START_REPLICATION SLOT s PHYSICAL pos TIMELINE tli. kFailedPrecondition when the server
  // refuses (e.g. the position is not in its history), with the server's words.
  // absl::nullopt-free variant: an immediate end of timeline (start == switch point) is
  // returned as a TimelineEnd.
  absl::StatusOr<absl::optional<TimelineEnd>> StartPhysical(const std::string& slot,
                                                           pipeline::Lsn start,
                                                           pipeline::TimelineId tli);

  // START_REPLICATION SLOT s LOGICAL pos (options): `options` is the parenthesised list's
  // inside, e.g. "proto_version '2', publication_names '\"pub\"'". kFailedPrecondition with
  // the server's words when it refuses an option.
  absl::Status StartLogical(const std::string& slot, pipeline::Lsn start, const std::string& options);

  // Reads the next complete message without blocking (Kind::kNone when none is buffered).
  // Malformed messages are kDataLoss naming the message type.
  absl::StatusOr<CopyMessage> ReadMessage();
  // Waits up to timeout_ms for the socket, or for extra_fd (may be -1) to become readable.
  // Returns true if extra_fd is readable.
  absl::StatusOr<bool> Wait(int timeout_ms, int extra_fd1, int extra_fd2);

  // BASE_BACKUP with these options: fast checkpoint, no WAL (the WAL archive has it), a
  // manifest with CRC32C checksums (docs/protocols.md, "Base backups"). Each CopyData payload
  // in 15's form (its type byte first: 'n' new archive, 'd' data, 'p' progress, 'm'
  // manifest) goes to on_copy_data, in order; 14's older form is translated to it; an error from it cancels the
  // backup and is returned. `on_start` runs once the start point and the tablespace list are
  // known. Tablespaces outside the data directory are kFailedPrecondition (not supported yet).
  // With `incremental` (17+), the backup is relative to the manifest UploadManifest sent.
  absl::StatusOr<BackupPoints> BaseBackup(
      const std::string& label, bool incremental, const std::function<absl::Status(const BackupPoints&)>& on_start,
      const std::function<absl::Status(absl::string_view)>& on_copy_data);

  // UPLOAD_MANIFEST (17+): the prior backup's backup_manifest, which the next BASE_BACKUP
  // (INCREMENTAL) on this connection is relative to. kFailedPrecondition before 17 or when
  // the server refuses it (its words).
  absl::Status UploadManifest(absl::string_view manifest);

  // Standby status update 'r' (write / flush / apply are byte positions + 1).
  absl::Status SendStatus(pipeline::Lsn write, pipeline::Lsn flush, pipeline::Lsn apply,
                          bool reply_requested);

  // After the server's CopyDone at the end of a historic timeline: closes our half of the copy
  // and reads the next timeline (docs/protocols.md, "Timeline switches").
  absl::StatusOr<TimelineEnd> FinishTimeline();
  // Client-initiated stop: CopyDone, then drain the results.
  absl::Status EndCopy();

  const std::string& server_name() const { return server_name_; }

 private:
  absl::StatusOr<SlotInfo> ReadSlotBySql(const std::string& slot);  // PostgreSQL 14
  struct Impl;
  explicit ReplicationConnection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string server_name_;
};

// Milliseconds of a monotonic clock: when the next standby status update is due.
int64_t MonotonicMillis();

// PostgreSQL's segment file name for `lsn` on `tli`: "%08X%08X%08X".
std::string WalFileName(pipeline::TimelineId tli, uint64_t segno, uint64_t segment_bytes);
// Parses a segment file name; false if it is not one (history, partial, backup files).
bool ParseWalFileName(absl::string_view name, uint64_t segment_bytes, pipeline::TimelineId* tli,
                      uint64_t* segno);

// One line of a timeline history file: `tli` ended at `switch_lsn`.
struct HistoryEntry {
  pipeline::TimelineId tli;
  pipeline::Lsn switch_lsn;
};
// Parses a .history file (comments and blank lines skipped). kDataLoss on a malformed line.
absl::StatusOr<std::vector<HistoryEntry>> ParseTimelineHistory(absl::string_view content);

}  // namespace ferry::client::pg
