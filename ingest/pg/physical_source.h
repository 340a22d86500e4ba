// PgPhysicalSource: streams WAL from a physical replication slot into a StreamSink, checking
// every record as it arrives, and reports back as flush only what the sink has acknowledged.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/pg/replication_conn.h"
#include "ingest/pg/wal_decoder.h"
#include "pipeline/sink.h"

namespace ferry::ingest::pg {

struct PgPhysicalOptions {
  std::string conninfo;
  std::string slot;              // created if missing when create_slot
  std::string application_name;  // what synchronous_standby_names names
  bool create_slot = true;
  int status_interval_ms = 10000;
};

// Where the archive's copy of this stream ends (synced), so streaming resumes without a gap.
struct ResumePoint {
  bool empty = true;
  pipeline::TimelineId timeline;
  pipeline::Lsn end;
};

// Counters for logs and status; read from other threads.
struct PgSourceStats {
  std::atomic<uint64_t> received_lsn{0};
  std::atomic<uint64_t> reported_flush_lsn{0};
  std::atomic<uint64_t> records_verified{0};
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint32_t> timeline{0};
};

// Runs on one thread (Stream); RequestStop may be called from any thread.
class PgPhysicalSource {
 public:
  PgPhysicalSource(PgPhysicalOptions options, pipeline::StreamSink* sink);
  ~PgPhysicalSource();

  // Connects and identifies the server (kUnavailable if it cannot be reached).
  absl::StatusOr<client::pg::SystemInfo> Connect();

  // Streams until RequestStop (then drains the sink, sends the final flush position and
  // returns OK) or an error: kUnavailable (connection lost: retry from the sink's end),
  // kDataLoss (bad WAL or a gap: nothing past it is acknowledged), kFailedPrecondition.
  // Requires Connect. Timeline switches are followed and their history files are handed to
  // the sink.
  absl::Status Stream(const ResumePoint& resume);

  void RequestStop();
  const PgSourceStats& stats() const { return stats_; }

 private:
  struct StreamState;
  // The slot, created first when missing (and create_slot).
  absl::StatusOr<client::pg::SlotInfo> ReadOrCreateSlot();
  // Where streaming starts: after the archive's end (`resume`), or on a first run at the
  // segment holding the slot's restart point.
  absl::Status FindStart(const ResumePoint& resume, const client::pg::SlotInfo& slot, StreamState& s);
  // When the archive went past the fork point of the server's newer timeline: continues on
  // the new timeline from the fork (the bytes past it are a dead branch).
  absl::Status LeaveDeadBranch(StreamState& s);
  // Streams the timeline s.tli from s.start until its end (returned), or until a stop is
  // requested (nullopt).
  absl::StatusOr<absl::optional<client::pg::TimelineEnd>> StreamTimeline(StreamState& s, int64_t sender_timeout_ms);
  // Handles every message the connection has buffered; sets *ended at the timeline's end.
  absl::Status ReadMessages(StreamState& s, client::pg::SilenceWatch& silence, size_t* burst_bytes,
                            absl::optional<client::pg::TimelineEnd>* ended);
  // Checks an XLogData message's WAL and appends what the archive lacks to the sink.
  absl::Status ArchiveWal(StreamState& s, const client::pg::CopyMessage& m);
  absl::Status SendFeedback(bool reply_requested);
  absl::Status ArchiveHistory(pipeline::TimelineId tli);

  const PgPhysicalOptions options_;
  pipeline::StreamSink* const sink_;
  std::unique_ptr<client::pg::ReplicationConnection> conn_;
  client::pg::SystemInfo system_;
  int major_ = 0;  // the server's PostgreSQL major, from Connect
  int stop_fd_ = -1;
  PgSourceStats stats_;

  // Feedback never claims more than this server has sent us in this session (or the resume
  // point): after a timeline fork the archive may hold a dead branch beyond it.
  uint64_t feedback_cap_ = 0;
  uint64_t last_sent_flush_ = 0;
};

}  // namespace ferry::ingest::pg
