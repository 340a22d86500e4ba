// The stream shipper: a session finds Kafka's tail, then tails the archive's stream log and
// produces its frames (and, for pg-changes, their Debezium events) until an error or Stop.
#include "cross_region/shipper.h"

#include <algorithm>
#include <deque>
#include <map>

#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cross_region/debezium.h"
#include "cross_region/kafka_internal.h"
#include "cross_region/producer.h"
#include "pipeline/change_event.h"
#include "pipeline/check.h"
#include "storage/archive.h"

namespace ferry::cross_region {

namespace {

// How long a reader waits for Kafka before calling the session off (and retrying later);
// short, so that a service stopping while Kafka is away is not held up by it.
constexpr int kKafkaTimeoutMs = 5000;

// Where a stream stands in Kafka, from the headers of the topic's last message.
struct KafkaTail {
  bool any = false;       // some frame was shipped
  uint32_t epoch = 0;
  uint64_t end = 0;       // end position of that frame
  bool complete = true;   // false: the last message is a part of a frame whose other parts are missing
};

absl::StatusOr<KafkaTail> ReadTail(const KafkaOptions& kafka, const std::string& topic) {
  KafkaTail tail;
  absl::Status parsed;
  FERRY_RETURN_IF_ERROR(ReadPartition(kafka, topic, 0, kLastMessage, kKafkaTimeoutMs,
                                      [&](const rd_kafka_message_t* m) {
    auto type = HeaderValue(m, kHeaderType);
    if (!type.has_value()) {
      parsed = absl::FailedPreconditionError(absl::StrCat(
          "kafka topic ", topic, " holds a message ferry did not write (", Where(m),
          "); give ferry topics of its own (another topic_prefix)"));
      return false;
    }
    if (!HeaderValue(m, kHeaderEpoch).has_value()) return false;  // nothing shipped before it
    auto epoch = HeaderNumber(m, kHeaderEpoch);
    auto end = HeaderNumber(m, kHeaderEnd);
    if (!epoch.ok() || !end.ok()) {
      parsed = epoch.ok() ? end.status() : epoch.status();
      return false;
    }
    tail.any = true;
    tail.epoch = static_cast<uint32_t>(*epoch);
    tail.end = *end;
    if (*type == "frame") {
      std::pair<std::string, std::string> part = absl::StrSplit(HeaderValue(m, kHeaderPart).value_or(""), '/');
      uint32_t i = 0, n = 0;
      if (!absl::SimpleAtoi(part.first, &i) || !absl::SimpleAtoi(part.second, &n) || i >= n) {
        parsed = absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": bad ", kHeaderPart, " header"));
        return false;
      }
      tail.complete = i + 1 == n;
    }
    return false;
  }));
  FERRY_RETURN_IF_ERROR(parsed);
  return tail;
}

}  // namespace

// One producer session: from Kafka's tail to an error or Stop.
class StreamShipper::Session {
 public:
  explicit Session(StreamShipper* owner)
      : s_(owner),
        topic_(StreamTopic(owner->options_.kafka.topic_prefix, owner->options_.source, owner->options_.kind)) {}

  absl::Status Run();

 private:
  // Counts a delivered message: a frame's last part on the stats, an event on its held frame.
  void OnDelivered(const Delivery& d);
  // Opens the archive's stream log (kUnavailable while the source has not created it yet).
  absl::Status OpenLog();
  // Where shipping resumes after Kafka's `tail`: the index of the first frame Kafka lacks.
  size_t Resume(const KafkaTail& tail);
  // Waits for news from the archive (a Notify) unless something is in flight; true when notified.
  bool AwaitWork();
  absl::Status ShipFrame(const storage::FrameLocation& loc);
  // Sends the frame itself to the stream topic (in parts when large).
  absl::Status SendFrame(const pipeline::FrameHeader& h, const std::string& bytes);
  // pg-changes: produces the Debezium messages of the frame's records, each counted on
  // held_.back() before it is produced.
  absl::Status PublishChanges(absl::string_view frame_bytes);
  // Sends the held frames whose events are all delivered, in order.
  absl::Status SendReadyFrames();
  absl::Status ShipSideFiles();
  bool StopRequested() {
    absl::MutexLock lock(&s_->mu_);
    return s_->stop_;
  }

  StreamShipper* const s_;
  const std::string topic_;
  // pg-changes frames held back until their events are delivered (see shipper.h), oldest
  // first; events of later frames are produced meanwhile. Each record (a transaction, or a
  // part of a large one) is rendered as it comes, so memory stays bounded by what is in
  // flight, however large a transaction or the initial snapshot.
  struct HeldFrame {
    uint64_t seq = 0;
    size_t undelivered = 0;  // its events produced and not yet delivered
    bool sealed = false;     // all its events are produced
    pipeline::FrameHeader header;
    std::string bytes;
  };
  // Declared before producer_: the producer's destructor serves delivery reports into it.
  std::deque<HeldFrame> held_;
  uint64_t next_change_frame_ = 0;
  std::unique_ptr<Producer> producer_;
  std::unique_ptr<storage::Archive> archive_;
  storage::StreamLog* log_ = nullptr;
  bool identity_sent_ = false;
  std::map<std::string, uint64_t> files_sent_;  // name -> checksum of the contents shipped
  // The last frame handed to the producer (its parts all queued).
  bool have_last_ = false;
  uint32_t last_epoch_ = 0;
  uint64_t last_end_ = 0;
};

absl::Status StreamShipper::Session::Run() {
  const StreamShipperOptions& o = s_->options_;
  FERRY_ASSIGN_OR_RETURN(producer_, Producer::Create(o.kafka, [this](const Delivery& d) { OnDelivered(d); }));
  FERRY_ASSIGN_OR_RETURN(KafkaTail tail, ReadTail(o.kafka, topic_));
  FERRY_RETURN_IF_ERROR(OpenLog());
  size_t next = Resume(tail);
  absl::Time last_refresh = absl::Now();
  absl::Time stop_deadline = absl::InfiniteFuture();
  bool refresh = true;
  while (true) {
    // Delivery reports: poll returns as soon as one is served, so a short wait adds no latency.
    FERRY_RETURN_IF_ERROR(producer_->Poll(producer_->in_flight_messages() > 0 ? 5 : 0));
    FERRY_RETURN_IF_ERROR(SendReadyFrames());
    const bool stopping = StopRequested();
    if (refresh || stopping || absl::Now() - last_refresh > absl::Seconds(1)) {
      FERRY_RETURN_IF_ERROR(log_->Refresh());
      // Side files before the frames found with them: a timeline's history file was written
      // before that timeline's frames.
      FERRY_RETURN_IF_ERROR(ShipSideFiles());
      last_refresh = absl::Now();
    }
    while (next < log_->frames().size() && producer_->in_flight_bytes() < o.max_in_flight_bytes) {
      FERRY_RETURN_IF_ERROR(ShipFrame(log_->frames()[next]));
      ++next;
    }
    if (stopping) {
      // Ship what is archived, within a bound (Kafka may be down, or far behind): what is
      // left goes with the next run, which starts from Kafka's tail.
      if (stop_deadline == absl::InfiniteFuture()) stop_deadline = absl::Now() + absl::Seconds(10);
      if ((next < log_->frames().size() || !held_.empty()) && absl::Now() < stop_deadline) {
        absl::Status drained = producer_->Drain(absl::Seconds(1), nullptr);
        if (drained.ok()) continue;
      }
      // Held frames whose events made it go too; the rest wait for the next run.
      FERRY_RETURN_IF_ERROR(SendReadyFrames());
      return producer_->Drain(absl::Seconds(5), nullptr);
    }
    refresh = AwaitWork();
  }
}

void StreamShipper::Session::OnDelivered(const Delivery& d) {
  if (d.change_frame != 0) {
    s_->stats_.change_events.fetch_add(1, std::memory_order_relaxed);
    for (HeldFrame& f : held_) {
      if (f.seq + 1 == d.change_frame) --f.undelivered;
    }
    return;
  }
  if (!d.frame_end) return;
  ShipperStats& st = s_->stats_;
  st.frames.fetch_add(1, std::memory_order_relaxed);
  st.shipped_epoch = d.epoch;
  st.shipped_pos = d.end;
  st.shipped_arrival_us = d.arrival_us;
  if (s_->options_.progress != nullptr) s_->options_.progress->SetShipped(d.end);
}

absl::Status StreamShipper::Session::OpenLog() {
  const StreamShipperOptions& o = s_->options_;
  FERRY_ASSIGN_OR_RETURN(archive_, storage::Archive::Open(o.archive_path, storage::ArchiveOptions{}));
  auto log = archive_->Stream(o.source, o.kind);
  if (!log.ok()) {
    // The service creates the stream when the source first connects.
    return absl::IsNotFound(log.status()) ? absl::UnavailableError(log.status().message()) : log.status();
  }
  log_ = *log;
  return absl::OkStatus();
}

size_t StreamShipper::Session::Resume(const KafkaTail& tail) {
  const StreamShipperOptions& o = s_->options_;
  // The first frame Kafka lacks: after the tail's frame, or the tail's frame itself when
  // only some of its parts made it. Frames are ordered by (epoch, end).
  const auto& frames = log_->frames();
  auto before_tail = [&](const storage::FrameLocation& f) {
    const auto key = std::make_pair(f.header.epoch, f.header.end_pos);
    const auto t = std::make_pair(tail.epoch, tail.end);
    return tail.complete ? key <= t : key < t;
  };
  size_t next = tail.any ? std::partition_point(frames.begin(), frames.end(), before_tail) - frames.begin() : 0;
  if (next > 0) {
    have_last_ = true;
    last_epoch_ = frames[next - 1].header.epoch;
    last_end_ = frames[next - 1].header.end_pos;
  }
  if (tail.any && tail.complete) {
    s_->stats_.shipped_epoch = tail.epoch;
    s_->stats_.shipped_pos = tail.end;
    if (o.progress != nullptr && !frames.empty() && frames.back().header.epoch == tail.epoch) {
      o.progress->SetShipped(tail.end);
    }
    if (next < frames.size() && frames[next].header.epoch == tail.epoch && frames[next].header.start_pos != tail.end) {
      // Retention removed frames before they were shipped (Kafka was away longer than the
      // archive keeps WAL): the standby region will see this gap and say so.
      spdlog::error("source={} stream={} event=kafka_gap kafka_end={} archive_resumes_at={}", o.source,
                    std::string(pipeline::StreamKindName(o.kind)), tail.end, frames[next].header.start_pos);
    }
  }
  s_->stats_.connected = true;
  spdlog::info("source={} stream={} event=kafka_shipping topic={} resume={}", o.source,
               std::string(pipeline::StreamKindName(o.kind)), topic_,
               tail.any ? absl::StrCat(tail.epoch, ":", tail.end, tail.complete ? "" : " (partial frame)") : "start");
  return next;
}

bool StreamShipper::Session::AwaitWork() {
  absl::MutexLock lock(&s_->mu_);
  auto woken = [this] { return s_->notified_ || s_->stop_; };
  if (producer_->in_flight_messages() == 0) {
    s_->mu_.AwaitWithTimeout(absl::Condition(&woken), absl::Milliseconds(200));
  }
  const bool notified = s_->notified_;
  s_->notified_ = false;
  return notified;
}

absl::Status StreamShipper::Session::ShipSideFiles() {
  const StreamShipperOptions& o = s_->options_;
  if (!identity_sent_) {
    auto identity = archive_->GetIdentity(o.source);
    if (identity.ok()) {
      std::string text;
      for (const auto& [k, v] : *identity) absl::StrAppend(&text, k, "=", v, "\n");
      FERRY_RETURN_IF_ERROR(producer_->Produce(topic_, 0, "", text,
                                               PositionHeaders("identity", have_last_, last_epoch_, last_end_), {}));
      identity_sent_ = true;
    } else if (!absl::IsNotFound(identity.status())) {
      return identity.status();
    }
  }
  for (const std::string& name : log_->ListFiles()) {
    FERRY_ASSIGN_OR_RETURN(std::string contents, log_->GetFile(name));
    const uint64_t sum = pipeline::Checksum64(contents);
    auto it = files_sent_.find(name);
    if (it != files_sent_.end() && it->second == sum) continue;
    Headers h = PositionHeaders("file", have_last_, last_epoch_, last_end_);
    h.emplace_back(kHeaderName, name);
    h.emplace_back(kHeaderChecksum, absl::StrCat(sum));
    FERRY_RETURN_IF_ERROR(producer_->Produce(topic_, 0, name, contents, h, {}));
    files_sent_[name] = sum;
  }
  return absl::OkStatus();
}

absl::Status StreamShipper::Session::PublishChanges(absl::string_view bytes) {
  // The header as read back with the bytes (an index entry lacks the checksums). The records
  // are views into `bytes` (uncompressed) or `decompressed`, both outliving them.
  FERRY_ASSIGN_OR_RETURN(pipeline::FrameHeader h, pipeline::DecodeFrameHeader(bytes));
  std::string decompressed;
  FERRY_ASSIGN_OR_RETURN(std::vector<pipeline::RecordView> records,
                         pipeline::DecodeFramePayload(h, bytes.substr(pipeline::kFrameHeaderSize), &decompressed,
                                                      log_->keys()));
  const DebeziumOptions dz{s_->options_.kafka.topic_prefix, s_->options_.source, s_->options_.tombstones};
  const int64_t now_ms = pipeline::NowUnixMicros() / 1000;
  HeldFrame& frame = held_.back();
  Delivery d;
  d.change_frame = frame.seq + 1;
  std::vector<KafkaRecord> messages;
  for (const pipeline::RecordView& r : records) {
    FERRY_ASSIGN_OR_RETURN(pipeline::ChangeBatch part, pipeline::DecodeChangeBatch(r.payload));
    messages.clear();
    RenderDebezium(part, dz, now_ms, &messages);
    for (const KafkaRecord& m : messages) {
      // Counted first: producing may serve delivery reports (a full queue), this one's too.
      ++frame.undelivered;
      // Keyed: one key's events stay in order in one partition (librdkafka's partitioner,
      // which places keys differently from Java clients').
      absl::Status st =
          producer_->Produce(m.topic, -1, m.key, m.tombstone ? absl::string_view() : m.value, {}, d, m.tombstone);
      if (!st.ok() && absl::StrContains(st.message(), "too large")) {
        // Retrying cannot help: say what to change (Debezium stops on such a row too).
        return absl::FailedPreconditionError(absl::StrCat(
            st.message(), ": a change event of ", m.value.size(), " bytes (transaction ", part.xid,
            "); raise message.max.bytes in [kafka.properties] and the topic's max.message.bytes"));
      }
      FERRY_RETURN_IF_ERROR(st);
    }
  }
  frame.sealed = true;
  return absl::OkStatus();
}

absl::Status StreamShipper::Session::SendReadyFrames() {
  while (!held_.empty() && held_.front().sealed && held_.front().undelivered == 0) {
    FERRY_RETURN_IF_ERROR(SendFrame(held_.front().header, held_.front().bytes));
    held_.pop_front();
  }
  return absl::OkStatus();
}

absl::Status StreamShipper::Session::ShipFrame(const storage::FrameLocation& loc) {
  FERRY_ASSIGN_OR_RETURN(std::string bytes, log_->ReadFrameBytes(loc));
  if (s_->options_.kind != pipeline::StreamKind::kPgChanges) return SendFrame(loc.header, bytes);
  HeldFrame f;
  f.seq = next_change_frame_++;
  f.header = loc.header;
  held_.push_back(std::move(f));
  FERRY_RETURN_IF_ERROR(PublishChanges(bytes));
  held_.back().bytes = std::move(bytes);
  return SendReadyFrames();
}

absl::Status StreamShipper::Session::SendFrame(const pipeline::FrameHeader& indexed, const std::string& bytes) {
  // The checksum header from the frame's own header: an index entry does not carry it.
  FERRY_ASSIGN_OR_RETURN(pipeline::FrameHeader h, pipeline::DecodeFrameHeader(bytes));
  if (h.end_pos != indexed.end_pos || h.epoch != indexed.epoch) {
    return absl::DataLossError(absl::StrCat("frame at ", indexed.end_pos, " of ", topic_, " reads back as another frame"));
  }
  const size_t max = s_->options_.kafka.max_message_bytes;
  const size_t parts = std::max<size_t>(1, (bytes.size() + max - 1) / max);
  for (size_t i = 0; i < parts; ++i) {
    Headers hd = PositionHeaders("frame", true, h.epoch, h.end_pos);
    hd.emplace_back(kHeaderStart, absl::StrCat(h.start_pos));
    hd.emplace_back(kHeaderPart, absl::StrCat(i, "/", parts));
    hd.emplace_back(kHeaderChecksum, absl::StrCat(h.payload_checksum));
    Delivery d;
    d.frame_end = i + 1 == parts;
    d.epoch = h.epoch;
    d.end = h.end_pos;
    d.arrival_us = h.arrival_us;
    FERRY_RETURN_IF_ERROR(producer_->Produce(topic_, 0, "", absl::string_view(bytes).substr(i * max, max), hd, d));
  }
  s_->stats_.bytes.fetch_add(bytes.size(), std::memory_order_relaxed);
  have_last_ = true;
  last_epoch_ = h.epoch;
  last_end_ = h.end_pos;
  return absl::OkStatus();
}

StreamShipper::StreamShipper(StreamShipperOptions options) : options_(std::move(options)) {}

StreamShipper::~StreamShipper() { Stop(); }

void StreamShipper::Start() {
  FERRY_CHECK(!thread_.joinable());
  thread_ = std::thread([this] { Run(); });
}

void StreamShipper::Notify() {
  absl::MutexLock lock(&mu_);
  notified_ = true;
}

void StreamShipper::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void StreamShipper::Run() {
  const std::string stream(pipeline::StreamKindName(options_.kind));
  absl::Duration backoff = absl::Seconds(1);
  absl::StatusCode last_code = absl::StatusCode::kOk;
  while (true) {
    stats_.sessions.fetch_add(1);
    absl::Status st = Session(this).Run();
    stats_.connected = false;
    absl::MutexLock lock(&mu_);
    if (stop_) {
      if (!st.ok()) spdlog::warn("source={} stream={} event=kafka_stopped note=\"{}\"", options_.source, stream, std::string(st.message()));
      return;
    }
    // Logged once per kind of trouble, not per retry.
    if (st.code() != last_code) {
      spdlog::warn("source={} stream={} event=kafka_unavailable error=\"{}\" action=retrying (local archiving goes on)",
                   options_.source, stream, std::string(st.message()));
    }
    last_code = st.code();
    mu_.AwaitWithTimeout(absl::Condition(&stop_), backoff);
    backoff = std::min(backoff * 2, absl::Seconds(15));
  }
}

}  // namespace ferry::cross_region
