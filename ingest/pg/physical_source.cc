// Physical WAL streaming: start-point negotiation, the copy loop, feedback, timeline switches.
#include "ingest/pg/physical_source.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "pipeline/read_pacer.h"

namespace ferry::ingest::pg {

using pipeline::Lsn;
using pipeline::TimelineId;


PgPhysicalSource::PgPhysicalSource(PgPhysicalOptions options, pipeline::StreamSink* sink)
    : options_(std::move(options)), sink_(sink) {
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  FERRY_CHECK(stop_fd_ >= 0);
}

PgPhysicalSource::~PgPhysicalSource() { close(stop_fd_); }

void PgPhysicalSource::RequestStop() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(stop_fd_, &one, sizeof(one));
}

absl::StatusOr<SystemInfo> PgPhysicalSource::Connect() {
  FERRY_ASSIGN_OR_RETURN(conn_, ReplicationConnection::Connect(options_.conninfo,
                                                               options_.application_name));
  FERRY_ASSIGN_OR_RETURN(system_, conn_->IdentifySystem());
  if (system_.segment_bytes == 0 || (system_.segment_bytes & (system_.segment_bytes - 1)) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("server reports wal_segment_size ", system_.segment_bytes));
  }
  return system_;
}

absl::Status PgPhysicalSource::ArchiveHistory(TimelineId tli) {
  if (tli.value() <= 1) return absl::OkStatus();  // timeline 1 has no history file
  FERRY_ASSIGN_OR_RETURN(TimelineHistoryFile h, conn_->TimelineHistory(tli));
  return sink_->PutFile(h.filename, h.content);
}

absl::Status PgPhysicalSource::SendFeedback(bool reply_requested) {
  // write = received and handed to the writer, flush = acknowledged by the sink's policy
  // (synced, or synced and shipped). Both are capped by what this server has sent.
  const uint64_t written = std::min(sink_->progress().written(), feedback_cap_);
  const uint64_t flushed = std::min(sink_->progress().Acked(), feedback_cap_);
  FERRY_RETURN_IF_ERROR(conn_->SendStatus(Lsn(std::max(written, flushed)), Lsn(flushed),
                                          Lsn(flushed), reply_requested));
  last_sent_flush_ = flushed;
  stats_.reported_flush_lsn.store(flushed, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status PgPhysicalSource::Stream(const ResumePoint& resume) {
  FERRY_CHECK(conn_ != nullptr);
  const uint64_t seg = system_.segment_bytes;

  FERRY_ASSIGN_OR_RETURN(SlotInfo slot, conn_->ReadSlot(options_.slot));
  if (!slot.exists) {
    if (!options_.create_slot) {
      return absl::FailedPreconditionError(absl::StrCat(
          "replication slot \"", options_.slot, "\" does not exist on ", conn_->server_name(),
          ": create it or set create_slot = true"));
    }
    FERRY_RETURN_IF_ERROR(conn_->CreatePhysicalSlot(options_.slot));
    FERRY_ASSIGN_OR_RETURN(slot, conn_->ReadSlot(options_.slot));
  }

  TimelineId tli;
  Lsn resume_end;  // bytes below this are already in the archive
  Lsn start;       // where streaming starts (at or before resume_end, to prime the decoder)
  bool at_record_boundary = false;
  if (resume.empty) {
    // First run: from the segment holding the slot's restart LSN, so that the first archived
    // segment is complete and wal-fetch can serve it whole.
    const Lsn from = slot.restart_lsn.valid() ? slot.restart_lsn : system_.xlogpos;
    tli = slot.restart_lsn.valid() ? slot.restart_tli : system_.timeline;
    start = resume_end = Lsn(from.value() - from.value() % seg);
  } else {
    tli = resume.timeline;
    resume_end = resume.end;
    if (slot.restart_lsn.valid() && slot.restart_lsn > resume_end && tli == slot.restart_tli) {
      return absl::DataLossError(absl::StrCat(
          "gap: slot \"", options_.slot, "\" restarts at ", slot.restart_lsn.ToString(),
          " but the archive ends at ", resume_end.ToString(),
          "; WAL in between is gone from the server. Take a new base backup and start a new archive"));
    }
    // Re-read the current segment from its start so the decoder sees whole records again;
    // the bytes the archive already has are checked and dropped, not re-archived.
    start = Lsn(resume_end.value() - resume_end.value() % seg);
    if (tli != system_.timeline) {
      // The server moved on to a newer timeline. If the archive went past the fork point on
      // the old one, those bytes are a dead branch: continue on the new timeline from the fork.
      FERRY_ASSIGN_OR_RETURN(TimelineHistoryFile h, conn_->TimelineHistory(system_.timeline));
      FERRY_ASSIGN_OR_RETURN(std::vector<HistoryEntry> history, ParseTimelineHistory(h.content));
      for (size_t i = 0; i < history.size(); ++i) {
        if (history[i].tli != tli || resume_end <= history[i].switch_lsn) continue;
        const TimelineId next = i + 1 < history.size() ? history[i + 1].tli : system_.timeline;
        tli = next;
        start = resume_end = history[i].switch_lsn;
        at_record_boundary = true;
        FERRY_RETURN_IF_ERROR(ArchiveHistory(tli));
        break;
      }
    }
  }
  feedback_cap_ = resume_end.value();

  WalDecoder decoder(seg, system_.system_id);
  decoder.Reset(start, at_record_boundary);
  std::vector<CommitInfo> commits;
  stats_.timeline.store(tli.value());

  FERRY_ASSIGN_OR_RETURN(const int64_t sender_timeout_ms, conn_->SenderTimeoutMillis());
  while (true) {
    FERRY_ASSIGN_OR_RETURN(absl::optional<TimelineEnd> immediate,
                           conn_->StartPhysical(options_.slot, start, tli));
    absl::optional<TimelineEnd> ended = immediate;
    int64_t next_status_ms = 0;  // send one at once: the primary learns our flush position
    pipeline::ReadPacer pacer(stop_fd_);
    size_t burst_bytes = 0;  // what the last wake-up read
    SilenceWatch silence(sender_timeout_ms, MonotonicMillis());
    bool stop = false;
    while (!ended.has_value() && !stop) {
      const int64_t now = MonotonicMillis();
      const bool ask = silence.ShouldAsk(now);
      if (now >= next_status_ms || ask) {
        FERRY_RETURN_IF_ERROR(SendFeedback(ask));
        next_status_ms = now + options_.status_interval_ms;
      }
      const int64_t wake = std::min(next_status_ms, silence.NextDeadline());
      pacer.Pace(sink_->commit_delay(), burst_bytes, wake - now);
      FERRY_ASSIGN_OR_RETURN(
          bool woken, conn_->Wait(static_cast<int>(std::max<int64_t>(1, wake - MonotonicMillis())),
                                  sink_->progress().notify_fd(), stop_fd_));
      burst_bytes = 0;
      if (woken) {
        uint64_t v;
        if (read(stop_fd_, &v, sizeof(v)) > 0) stop = true;
        sink_->progress().ConsumeNotification();
        if (std::min(sink_->progress().Acked(), feedback_cap_) > last_sent_flush_) {
          FERRY_RETURN_IF_ERROR(SendFeedback(false));  // a synchronous commit is waiting on this
        }
      }
      // Drain every buffered message before waiting again.
      while (!stop) {
        FERRY_ASSIGN_OR_RETURN(CopyMessage m, conn_->ReadMessage());
        if (m.kind == CopyMessage::Kind::kNone) break;
        silence.Heard(MonotonicMillis());
        burst_bytes += m.payload.size();
        if (m.kind == CopyMessage::Kind::kCopyDone) {
          FERRY_ASSIGN_OR_RETURN(TimelineEnd e, conn_->FinishTimeline());
          ended = e;
          break;
        }
        if (m.kind == CopyMessage::Kind::kKeepalive) {
          if (m.reply_requested) FERRY_RETURN_IF_ERROR(SendFeedback(false));
          continue;
        }
        if (m.data_start != decoder.position()) {
          return absl::DataLossError(absl::StrCat("server sent WAL at ", m.data_start.ToString(),
                                                  ", expected ", decoder.position().ToString()));
        }
        commits.clear();
        // Checked before it is queued: a bad record stops the stream with nothing past it
        // archived or acknowledged.
        FERRY_RETURN_IF_ERROR(decoder.Feed(m.payload, &commits));
        const uint64_t begin = m.data_start.value();
        const uint64_t end = begin + m.payload.size();
        stats_.received_lsn.store(end, std::memory_order_relaxed);
        stats_.bytes_received.fetch_add(m.payload.size(), std::memory_order_relaxed);
        stats_.records_verified.store(decoder.records_verified(), std::memory_order_relaxed);
        if (end <= resume_end.value()) continue;  // already archived
        const uint64_t from = std::max(begin, resume_end.value());
        pipeline::Record rec;
        rec.end_pos = end;
        rec.payload.assign(m.payload.data() + (from - begin), end - from);
        if (!commits.empty()) rec.data_ts = commits.back().commit_time;
        FERRY_RETURN_IF_ERROR(sink_->Append(tli.value(), from, std::move(rec)));
        feedback_cap_ = end;
      }
      // After draining what arrived: a server that answered nothing for so long is gone.
      if (!ended.has_value() && !stop) FERRY_RETURN_IF_ERROR(silence.Check(MonotonicMillis()));
    }
    if (stop) {
      // Graceful stop: everything received is synced, the primary hears the final flush
      // position, then the copy is closed.
      FERRY_RETURN_IF_ERROR(sink_->Drain());
      FERRY_RETURN_IF_ERROR(SendFeedback(false));
      return conn_->EndCopy();
    }
    // End of a historic timeline: archive the next timeline's history, then follow it. The
    // switch point is a record boundary; the decoder continues where it is if it got there.
    FERRY_RETURN_IF_ERROR(sink_->Drain());
    tli = ended->next_tli;
    FERRY_RETURN_IF_ERROR(ArchiveHistory(tli));
    start = resume_end = ended->next_start;  // the new epoch starts empty in the archive
    if (decoder.position() != start) decoder.Reset(start, /*at_record_boundary=*/true);
    stats_.timeline.store(tli.value());
  }
}

}  // namespace ferry::ingest::pg
