// The waiting half of a replication stream, shared by the physical and the logical source:
// standby status updates on schedule and as soon as the sink acknowledges more (a synchronous
// commit may be waiting on it), a server silent for half of wal_sender_timeout asked for a
// reply and given up on after the other half, reads paced to the sink's commit_delay, and the
// wake-ups of the sink's progress and of a stop request (docs/protocols.md, "Streaming
// messages").
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "client/pg/replication_conn.h"
#include "pipeline/read_pacer.h"
#include "pipeline/sink.h"

namespace ferry::ingest::pg {

class CopyLoop {
 public:
  CopyLoop(client::pg::ReplicationConnection* conn, pipeline::StreamSink* sink, int stop_fd,
           int64_t status_interval_ms, int64_t sender_timeout_ms);

  // Sends a status update when one is due (`send_feedback(reply_requested)`), then waits until
  // the server sends something, the sink's progress moves (then, when `acknowledged_more()`,
  // sends one at once) or a stop is requested. Returns true on a stop request.
  absl::StatusOr<bool> Wait(absl::FunctionRef<absl::Status(bool)> send_feedback,
                            absl::FunctionRef<bool()> acknowledged_more);

  // For the source's read loop: every message heard resets the silence, its size counts
  // towards the burst the next wait paces.
  client::pg::SilenceWatch& silence() { return silence_; }
  size_t* burst_bytes() { return &burst_bytes_; }
  // After draining what arrived: kUnavailable when the server has said nothing for too long.
  absl::Status CheckSilence() const;

 private:
  client::pg::ReplicationConnection* const conn_;
  pipeline::StreamSink* const sink_;
  const int stop_fd_;
  const int64_t status_interval_ms_;
  int64_t next_status_ms_ = 0;  // send one at once: the primary learns our flush position
  pipeline::ReadPacer pacer_;
  size_t burst_bytes_ = 0;  // what the last wake-up read
  client::pg::SilenceWatch silence_;
};

}  // namespace ferry::ingest::pg
