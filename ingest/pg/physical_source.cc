// Physical WAL streaming: start-point negotiation, the copy loop, feedback, timeline switches.
#include "ingest/pg/physical_source.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "client/pg/server_version.h"
#include "ingest/pg/copy_loop.h"
#include "pipeline/check.h"

namespace ferry::ingest::pg {

using pipeline::Lsn;
using pipeline::TimelineId;

// One Stream call's state: where it stands in the WAL, and the decoder checking it.
struct PgPhysicalSource::StreamState {
  StreamState(uint64_t segment_bytes, uint64_t system_id) : decoder(segment_bytes, system_id) {}

  TimelineId tli;
  Lsn resume_end;  // bytes below this are already in the archive
  Lsn start;       // where streaming starts (at or before resume_end, to prime the decoder)
  bool at_record_boundary = false;
  WalDecoder decoder;
  std::vector<CommitInfo> commits;  // the last message's commits (reused)
};

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

absl::StatusOr<client::pg::SystemInfo> PgPhysicalSource::Connect() {
  FERRY_ASSIGN_OR_RETURN(conn_, client::pg::ReplicationConnection::Connect(options_.conninfo,
                                                               options_.application_name));
  FERRY_ASSIGN_OR_RETURN(major_, client::pg::SupportedMajor(conn_->ServerVersion()));
  FERRY_ASSIGN_OR_RETURN(system_, conn_->IdentifySystem());
  if (system_.segment_bytes == 0 || (system_.segment_bytes & (system_.segment_bytes - 1)) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("server reports wal_segment_size ", system_.segment_bytes));
  }
  return system_;
}

absl::Status PgPhysicalSource::ArchiveHistory(TimelineId tli) {
  if (tli.value() <= 1) return absl::OkStatus();  // timeline 1 has no history file
  FERRY_ASSIGN_OR_RETURN(client::pg::TimelineHistoryFile h, conn_->TimelineHistory(tli));
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

absl::StatusOr<client::pg::SlotInfo> PgPhysicalSource::ReadOrCreateSlot() {
  FERRY_ASSIGN_OR_RETURN(client::pg::SlotInfo slot, conn_->ReadSlot(options_.slot));
  if (slot.exists) return slot;
  if (!options_.create_slot) {
    return absl::FailedPreconditionError(absl::StrCat(
        "replication slot \"", options_.slot, "\" does not exist on ", conn_->server_name(),
        ": create it or set create_slot = true"));
  }
  FERRY_RETURN_IF_ERROR(conn_->CreatePhysicalSlot(options_.slot));
  return conn_->ReadSlot(options_.slot);
}

absl::Status PgPhysicalSource::FindStart(const ResumePoint& resume, const client::pg::SlotInfo& slot, StreamState& s) {
  const uint64_t seg = system_.segment_bytes;
  if (resume.empty) {
    // First run: from the segment holding the slot's restart LSN, so that the first archived
    // segment is complete and wal-fetch can serve it whole.
    const Lsn from = slot.restart_lsn.valid() ? slot.restart_lsn : system_.xlogpos;
    s.tli = slot.restart_lsn.valid() ? slot.restart_tli : system_.timeline;
    s.start = s.resume_end = Lsn(from.value() - from.value() % seg);
    return absl::OkStatus();
  }
  s.tli = resume.timeline;
  s.resume_end = resume.end;
  if (slot.restart_lsn.valid() && slot.restart_lsn > s.resume_end && s.tli == slot.restart_tli) {
    return absl::DataLossError(absl::StrCat(
        "gap: slot \"", options_.slot, "\" restarts at ", slot.restart_lsn.ToString(),
        " but the archive ends at ", s.resume_end.ToString(),
        "; WAL in between is gone from the server. Take a new base backup and start a new archive"));
  }
  // Re-read the current segment from its start so the decoder sees whole records again;
  // the bytes the archive already has are checked and dropped, not re-archived.
  s.start = Lsn(s.resume_end.value() - s.resume_end.value() % seg);
  if (s.tli != system_.timeline) return LeaveDeadBranch(s);
  return absl::OkStatus();
}

absl::Status PgPhysicalSource::LeaveDeadBranch(StreamState& s) {
  // The server moved on to a newer timeline. If the archive went past the fork point on
  // the old one, those bytes are a dead branch: continue on the new timeline from the fork.
  FERRY_ASSIGN_OR_RETURN(client::pg::TimelineHistoryFile h, conn_->TimelineHistory(system_.timeline));
  FERRY_ASSIGN_OR_RETURN(std::vector<client::pg::HistoryEntry> history, client::pg::ParseTimelineHistory(h.content));
  for (size_t i = 0; i < history.size(); ++i) {
    if (history[i].tli != s.tli || s.resume_end <= history[i].switch_lsn) continue;
    const TimelineId next = i + 1 < history.size() ? history[i + 1].tli : system_.timeline;
    s.tli = next;
    s.start = s.resume_end = history[i].switch_lsn;
    s.at_record_boundary = true;
    return ArchiveHistory(s.tli);
  }
  return absl::OkStatus();
}

absl::Status PgPhysicalSource::Stream(const ResumePoint& resume) {
  FERRY_CHECK(conn_ != nullptr);
  FERRY_ASSIGN_OR_RETURN(client::pg::SlotInfo slot, ReadOrCreateSlot());
  StreamState s(system_.segment_bytes, system_.system_id);
  FERRY_CHECK(s.decoder.ExpectMajor(major_));  // SupportedMajor let only a major it reads through
  FERRY_RETURN_IF_ERROR(FindStart(resume, slot, s));
  feedback_cap_ = s.resume_end.value();
  s.decoder.Reset(s.start, s.at_record_boundary);
  stats_.timeline.store(s.tli.value());

  FERRY_ASSIGN_OR_RETURN(const int64_t sender_timeout_ms, conn_->SenderTimeoutMillis());
  while (true) {
    FERRY_ASSIGN_OR_RETURN(absl::optional<client::pg::TimelineEnd> ended, StreamTimeline(s, sender_timeout_ms));
    if (!ended.has_value()) {
      // Graceful stop: everything received is synced, the primary hears the final flush
      // position, then the copy is closed.
      FERRY_RETURN_IF_ERROR(sink_->Drain());
      FERRY_RETURN_IF_ERROR(SendFeedback(false));
      return conn_->EndCopy();
    }
    // End of a historic timeline: archive the next timeline's history, then follow it. The
    // switch point is a record boundary; the decoder continues where it is if it got there.
    FERRY_RETURN_IF_ERROR(sink_->Drain());
    s.tli = ended->next_tli;
    FERRY_RETURN_IF_ERROR(ArchiveHistory(s.tli));
    s.start = s.resume_end = ended->next_start;  // the new epoch starts empty in the archive
    if (s.decoder.position() != s.start) s.decoder.Reset(s.start, /*at_record_boundary=*/true);
    stats_.timeline.store(s.tli.value());
  }
}

absl::StatusOr<absl::optional<client::pg::TimelineEnd>> PgPhysicalSource::StreamTimeline(StreamState& s,
                                                                             int64_t sender_timeout_ms) {
  FERRY_ASSIGN_OR_RETURN(absl::optional<client::pg::TimelineEnd> ended, conn_->StartPhysical(options_.slot, s.start, s.tli));
  CopyLoop loop(conn_.get(), sink_, stop_fd_, options_.status_interval_ms, sender_timeout_ms);
  while (!ended.has_value()) {
    FERRY_ASSIGN_OR_RETURN(
        const bool stop,
        loop.Wait([this](bool ask) { return SendFeedback(ask); },
                  [this] { return std::min(sink_->progress().Acked(), feedback_cap_) > last_sent_flush_; }));
    if (stop) return absl::optional<client::pg::TimelineEnd>();
    // Everything the connection has buffered is one burst, made durable on this thread when
    // the sink is idle: a synchronous commit's WAL is received, synced and acknowledged here
    // without waking another thread.
    sink_->BeginBurst();
    absl::Status read = ReadMessages(s, loop.silence(), loop.burst_bytes(), &ended);
    absl::Status written = sink_->EndBurst();
    FERRY_RETURN_IF_ERROR(read);
    FERRY_RETURN_IF_ERROR(written);
    // Not after the timeline's end: its COPY is closed, the next timeline's feedback tells.
    if (!ended.has_value() && std::min(sink_->progress().Acked(), feedback_cap_) > last_sent_flush_) {
      FERRY_RETURN_IF_ERROR(SendFeedback(false));
    }
    // After draining what arrived: a server that answered nothing for so long is gone.
    if (!ended.has_value()) FERRY_RETURN_IF_ERROR(loop.CheckSilence());
  }
  return ended;
}

absl::Status PgPhysicalSource::ReadMessages(StreamState& s, client::pg::SilenceWatch& silence, size_t* burst_bytes,
                                            absl::optional<client::pg::TimelineEnd>* ended) {
  // Drain every buffered message before waiting again.
  while (true) {
    FERRY_ASSIGN_OR_RETURN(client::pg::CopyMessage m, conn_->ReadMessage());
    if (m.kind == client::pg::CopyMessage::Kind::kNone) return absl::OkStatus();
    silence.Heard(client::pg::MonotonicMillis());
    *burst_bytes += m.payload.size();
    if (m.kind == client::pg::CopyMessage::Kind::kCopyDone) {
      FERRY_ASSIGN_OR_RETURN(client::pg::TimelineEnd e, conn_->FinishTimeline());
      *ended = e;
      return absl::OkStatus();
    }
    if (m.kind == client::pg::CopyMessage::Kind::kKeepalive) {
      if (m.reply_requested) FERRY_RETURN_IF_ERROR(SendFeedback(false));
      continue;
    }
    FERRY_RETURN_IF_ERROR(ArchiveWal(s, m));
  }
}

absl::Status PgPhysicalSource::ArchiveWal(StreamState& s, const client::pg::CopyMessage& m) {
  if (m.data_start != s.decoder.position()) {
    return absl::DataLossError(absl::StrCat("server sent WAL at ", m.data_start.ToString(),
                                            ", expected ", s.decoder.position().ToString()));
  }
  s.commits.clear();
  // Checked before it is queued: a bad record stops the stream with nothing past it
  // archived or acknowledged.
  FERRY_RETURN_IF_ERROR(s.decoder.Feed(m.payload, &s.commits));
  const uint64_t begin = m.data_start.value();
  const uint64_t end = begin + m.payload.size();
  stats_.received_lsn.store(end, std::memory_order_relaxed);
  stats_.bytes_received.fetch_add(m.payload.size(), std::memory_order_relaxed);
  stats_.records_verified.store(s.decoder.records_verified(), std::memory_order_relaxed);
  if (end <= s.resume_end.value()) return absl::OkStatus();  // already archived
  const uint64_t from = std::max(begin, s.resume_end.value());
  pipeline::Record rec;
  rec.end_pos = end;
  rec.payload.assign(m.payload.data() + (from - begin), end - from);
  if (!s.commits.empty()) rec.data_ts = s.commits.back().commit_time;
  FERRY_RETURN_IF_ERROR(sink_->Append({s.tli.value(), from}, std::move(rec)));
  feedback_cap_ = end;
  return absl::OkStatus();
}

}  // namespace ferry::ingest::pg
