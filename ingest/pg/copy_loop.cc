#include "ingest/pg/copy_loop.h"

#include <unistd.h>

#include <algorithm>

#include "pipeline/check.h"

namespace ferry::ingest::pg {

CopyLoop::CopyLoop(client::pg::ReplicationConnection* conn, pipeline::StreamSink* sink, int stop_fd,
                   int64_t status_interval_ms, int64_t sender_timeout_ms)
    : conn_(conn),
      sink_(sink),
      stop_fd_(stop_fd),
      status_interval_ms_(status_interval_ms),
      pacer_(stop_fd),
      silence_(sender_timeout_ms, client::pg::MonotonicMillis()) {}

absl::StatusOr<bool> CopyLoop::Wait(absl::FunctionRef<absl::Status(bool)> send_feedback,
                                    absl::FunctionRef<bool()> acknowledged_more) {
  const int64_t now = client::pg::MonotonicMillis();
  const bool ask = silence_.ShouldAsk(now);
  if (now >= next_status_ms_ || ask) {
    FERRY_RETURN_IF_ERROR(send_feedback(ask));
    next_status_ms_ = now + status_interval_ms_;
  }
  const int64_t wake = std::min(next_status_ms_, silence_.NextDeadline());
  pacer_.Pace(sink_->commit_delay(), burst_bytes_, wake - now);
  const int timeout_ms = static_cast<int>(std::max<int64_t>(1, wake - client::pg::MonotonicMillis()));
  FERRY_ASSIGN_OR_RETURN(bool woken, conn_->Wait(timeout_ms, sink_->progress().notify_fd(), stop_fd_));
  burst_bytes_ = 0;
  if (!woken) return false;
  uint64_t v;
  const bool stop = read(stop_fd_, &v, sizeof(v)) > 0;
  sink_->progress().ConsumeNotification();
  if (acknowledged_more()) FERRY_RETURN_IF_ERROR(send_feedback(false));  // a synchronous commit may wait on it
  return stop;
}

absl::Status CopyLoop::CheckSilence() const { return silence_.Check(client::pg::MonotonicMillis()); }

}  // namespace ferry::ingest::pg
