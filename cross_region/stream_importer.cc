// The mirror's stream importer: frames, side files and identities from the stream topics into
// the local archive's stream logs, exactly once (see mirror.h).
#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cross_region/mirror_import.h"
#include "pipeline/check.h"

namespace ferry::cross_region {

absl::Status StreamImporter::Handle(const std::string& topic, const std::string& source, pipeline::StreamKind kind,
                                    const rd_kafka_message_t* m, bool* done) {
  FERRY_ASSIGN_OR_RETURN(Stream * s, Find(topic, source, kind));
  const auto type = HeaderValue(m, kHeaderType).value_or("");
  if (type == "identity" || type == "file") return HandleSideMessage(*s, type, m);
  if (type != "frame") {
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": not a ferry stream message (",
                                            kHeaderType, "=\"", type, "\")"));
  }
  return HandleFrame(*s, m, done);
}

absl::StatusOr<StreamImporter::Stream*> StreamImporter::Find(const std::string& topic, const std::string& source,
                                                             pipeline::StreamKind kind) {
  auto it = streams_.find(topic);
  if (it != streams_.end()) return &it->second;
  FERRY_RETURN_IF_ERROR(storage::ValidateSourceName(source));
  Stream s;
  s.source = source;
  s.kind = kind;
  FERRY_ASSIGN_OR_RETURN(s.log, archive_.Stream(source, kind));
  if (!s.log->empty()) {
    const auto& h = s.log->frames().back().header;
    s.have_end = true;
    s.end_epoch = h.epoch;
    s.end_pos = h.end_pos;
    s.shown.epoch = h.epoch;
    s.shown.position = h.end_pos;
    s.shown.last_arrival_us = h.arrival_us;
  }
  s.shown.source = source;
  s.shown.stream = std::string(pipeline::StreamKindName(kind));
  return &streams_.emplace(topic, std::move(s)).first->second;
}

absl::Status StreamImporter::HandleSideMessage(Stream& s, absl::string_view type, const rd_kafka_message_t* m) {
  const absl::string_view value(static_cast<const char*>(m->payload), m->len);
  // Ordered after the frames before it: write those first.
  FERRY_RETURN_IF_ERROR(FlushStream(s));
  if (type != "file") return HandleIdentity(s, value);
  auto name = HeaderValue(m, kHeaderName);
  FERRY_ASSIGN_OR_RETURN(uint64_t sum, HeaderNumber(m, kHeaderChecksum));
  if (!name.has_value() || pipeline::Checksum64(value) != sum) {
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": side file damaged (checksum)"));
  }
  return s.log->PutFile(*name, value);
}

absl::Status StreamImporter::HandleIdentity(Stream& s, absl::string_view value) {
  storage::SourceIdentity identity;
  for (absl::string_view line : absl::StrSplit(value, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    identity[kv.first] = kv.second;
  }
  auto have = archive_.GetIdentity(s.source);
  if (absl::IsNotFound(have.status())) return archive_.SetIdentity(s.source, identity);
  if (!have.ok()) return have.status();
  if (*have != identity) {
    return absl::FailedPreconditionError(absl::StrCat(
        "source \"", s.source, "\": the primary region's identity (", absl::StrJoin(identity, " ", absl::PairFormatter("=")),
        ") differs from this archive's (", archive_.path(), "); mirror into a new archive"));
  }
  return absl::OkStatus();
}

absl::Status StreamImporter::HandleFrame(Stream& s, const rd_kafka_message_t* m, bool* done) {
  const absl::string_view value(static_cast<const char*>(m->payload), m->len);
  std::pair<std::string, std::string> part = absl::StrSplit(HeaderValue(m, kHeaderPart).value_or(""), '/');
  uint32_t i = 0, n = 0;
  FERRY_ASSIGN_OR_RETURN(uint64_t end, HeaderNumber(m, kHeaderEnd));
  if (!absl::SimpleAtoi(part.first, &i) || !absl::SimpleAtoi(part.second, &n) || i >= n) {
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": bad ", kHeaderPart, " header"));
  }
  if (n == 1) {  // the common case: the whole frame in one message, no reassembly copy
    s.parts.clear();
    s.next_part = 0;
    return AcceptFrame(s, value, m);
  }
  if (i == 0) {
    s.parts.clear();
  } else if (s.next_part != i || s.parts_end != end) {
    // The rest of a frame whose start this mirror never saw (a producer session that ended
    // mid-frame resends it whole): ignore.
    s.parts.clear();
    s.next_part = 0;
    return absl::OkStatus();
  }
  s.parts.append(value.data(), value.size());
  s.next_part = i + 1;
  s.parts_end = end;
  if (i + 1 < n) {
    *done = false;  // committed only with the frame's last part
    return absl::OkStatus();
  }
  std::string bytes = std::move(s.parts);
  s.parts.clear();
  s.next_part = 0;
  return AcceptFrame(s, bytes, m);
}

absl::Status StreamImporter::AcceptFrame(Stream& s, absl::string_view bytes, const rd_kafka_message_t* m) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": frame ", why,
                                            "; the primary's archive is the reference: run ferry verify there"));
  };
  auto header = pipeline::DecodeFrameHeader(bytes);
  if (!header.ok()) return bad(header.status().message());
  if (header->frame_size() != bytes.size()) return bad("size does not match its header");
  if (pipeline::Checksum64(bytes.substr(pipeline::kFrameHeaderSize)) != header->payload_checksum) {
    return bad("payload checksum mismatch");
  }
  FERRY_ASSIGN_OR_RETURN(uint64_t start, HeaderNumber(m, kHeaderStart));
  FERRY_ASSIGN_OR_RETURN(uint64_t epoch, HeaderNumber(m, kHeaderEpoch));
  if (header->start_pos != start || header->epoch != epoch) return bad("positions differ from the message headers");
  if (s.have_end) {
    if (std::make_pair(header->epoch, header->end_pos) <= std::make_pair(s.end_epoch, s.end_pos)) {
      ++s.shown.duplicates;  // redelivered
      return absl::OkStatus();
    }
    if (header->epoch == s.end_epoch && header->start_pos != s.end_pos) {
      return absl::DataLossError(absl::StrCat(
          "gap in ", rd_kafka_topic_name(m->rkt), ": this archive's stream ends at ", s.end_pos, " (epoch ", s.end_epoch,
          ") but the next frame in Kafka starts at ", header->start_pos, " (", Where(m),
          "); Kafka no longer has the frames between (retention?): re-seed this archive from the primary's"));
    }
  }
  s.pending.bytes.append(bytes.data(), bytes.size());
  s.pending.headers.push_back(*header);
  s.have_end = true;
  s.end_epoch = header->epoch;
  s.end_pos = header->end_pos;
  return absl::OkStatus();
}

absl::Status StreamImporter::Flush() {
  for (auto& [topic, s] : streams_) FERRY_RETURN_IF_ERROR(FlushStream(s));
  return absl::OkStatus();
}

absl::Status StreamImporter::FlushStream(Stream& s) {
  if (s.pending.headers.empty()) return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(s.log->Write(s.pending));  // synced when it returns
  const int64_t now = pipeline::NowUnixMicros();
  absl::MutexLock lock(&stats_.mu);
  for (const pipeline::FrameHeader& h : s.pending.headers) {
    const double lag = static_cast<double>(now - h.arrival_us) / 1e6;
    if (stats_.lag_ring.size() < 100000) {
      stats_.lag_ring.push_back(lag);
    } else {
      stats_.lag_ring[stats_.lag_next++ % stats_.lag_ring.size()] = lag;
    }
    s.shown.last_arrival_us = h.arrival_us;
  }
  s.shown.frames += s.pending.headers.size();
  s.shown.epoch = s.pending.headers.back().epoch;
  s.shown.position = s.pending.headers.back().end_pos;
  s.pending.bytes.clear();
  s.pending.headers.clear();
  return absl::OkStatus();
}

std::vector<MirroredStream> StreamImporter::Shown(rd_kafka_t* rk) const {
  std::vector<MirroredStream> out;
  const int64_t now = pipeline::NowUnixMicros();
  for (const auto& [topic, s] : streams_) {
    MirroredStream v = s.shown;
    int64_t low = 0, high = 0;
    PartitionList pos(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(pos.get(), topic.c_str(), 0);
    if (rd_kafka_position(rk, pos.get()) == RD_KAFKA_RESP_ERR_NO_ERROR && pos->elems[0].offset >= 0 &&
        rd_kafka_get_watermark_offsets(rk, topic.c_str(), 0, &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      v.kafka_lag = std::max<int64_t>(0, high - pos->elems[0].offset);
    }
    v.lag_seconds = v.kafka_lag == 0 || v.last_arrival_us == 0 ? 0 : static_cast<double>(now - v.last_arrival_us) / 1e6;
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace ferry::cross_region
