#include "cross_region/mirror.h"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cross_region/kafka_internal.h"
#include "pipeline/check.h"
#include "pipeline/compress.h"
#include "pipeline/sha256.h"
#include "storage/archive.h"
#include "storage/durable_file.h"
#include "storage/snapshot_store.h"

namespace ferry::cross_region {

namespace {

// Frames arriving for one stream: reassembled from parts, checked, deduplicated, and queued
// for the next group commit.
struct StreamState {
  std::string source;
  pipeline::StreamKind kind;
  storage::StreamLog* log = nullptr;
  pipeline::EncodedFrames pending;  // to be written at the end of the batch
  // The stream's end, counting pending frames.
  bool have_end = false;
  uint32_t end_epoch = 0;
  uint64_t end_pos = 0;
  // The frame being reassembled.
  std::string parts;
  uint32_t next_part = 0;
  uint64_t parts_end = 0;
  MirroredStream shown;
};

// A source's snapshots arriving: chunks into an open writer, manifests once their chunks are in.
struct SnapshotState {
  std::unique_ptr<storage::SnapshotStore> store;
  std::unique_ptr<storage::SnapshotWriter> writer;
  std::deque<storage::SnapshotManifest> waiting;  // manifests whose chunks have not all arrived
  bool unsynced = false;                          // chunks written since the last SyncPacks
};

// Topic -> (source, suffix) under the prefix.
bool SplitTopic(absl::string_view topic, absl::string_view prefix, std::string* source, std::string* suffix) {
  if (!absl::ConsumePrefix(&topic, prefix) || !absl::ConsumePrefix(&topic, ".")) return false;
  const size_t dot = topic.rfind('.');
  if (dot == absl::string_view::npos) return false;
  *source = std::string(topic.substr(0, dot));
  *suffix = std::string(topic.substr(dot + 1));
  return true;
}

// A writer of `store`, waiting while someone else holds its lock: an operator's `ferry
// retention` or `ferry backup` on this archive, or a child process of ours forked while our
// previous writer held the lock and not yet exec'd (the descriptor is O_CLOEXEC, but between
// fork and exec it keeps the flock). The mirror is the only importer, so the wait is short;
// failing instead would stop the mirror for good. Gives up after `patience`. Begin reports
// that lock, and only it, as kFailedPrecondition (snapshot_store.h); other errors return at once.
absl::StatusOr<std::unique_ptr<storage::SnapshotWriter>> BeginWhenUnlocked(storage::SnapshotStore& store,
                                                                           absl::Duration patience) {
  const absl::Time give_up = absl::Now() + patience;
  bool logged = false;
  while (true) {
    auto writer = store.Begin(0, {});
    if (writer.ok() || !absl::IsFailedPrecondition(writer.status()) || absl::Now() >= give_up) return writer;
    if (!logged) {
      spdlog::warn("event=snapshot_store_locked error=\"{}\" action=waiting", std::string(writer.status().message()));
      logged = true;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

}  // namespace

struct Mirror::Impl {
  MirrorOptions options;
  std::unique_ptr<storage::Archive> archive;
  KafkaHandle rk;
  std::atomic<bool> stop{false};

  std::map<std::string, StreamState> streams;       // by topic
  std::map<std::string, SnapshotState> snapshots;   // by source
  // Per partition: the offset to commit once the batch is synced (last message fully handled + 1).
  std::map<std::pair<std::string, int32_t>, int64_t> committable;

  absl::Mutex mu;  // guards what State() reads
  std::vector<MirroredStream> shown ABSL_GUARDED_BY(mu);
  uint64_t snapshots_imported ABSL_GUARDED_BY(mu) = 0;
  uint64_t chunks_imported ABSL_GUARDED_BY(mu) = 0;
  std::vector<double> lag_ring ABSL_GUARDED_BY(mu);  // recent frame lags, seconds
  size_t lag_next ABSL_GUARDED_BY(mu) = 0;

  absl::Status Handle(const rd_kafka_message_t* m);
  absl::Status HandleStream(StreamState& s, const rd_kafka_message_t* m, bool* done);
  absl::Status AcceptFrame(StreamState& s, absl::string_view bytes, const rd_kafka_message_t* m);
  absl::Status FlushStream(StreamState& s);
  absl::Status HandleChunk(const std::string& source, const rd_kafka_message_t* m);
  absl::Status HandleManifest(const std::string& source, const rd_kafka_message_t* m);
  absl::StatusOr<SnapshotState*> Snapshots(const std::string& source);
  absl::Status TryCommitManifests(SnapshotState& st);
  absl::Status EndBatch();
  void Publish();
  // Assigns the partitions of every topic of the configured sources that exists by now.
  absl::Status Discover();
  std::set<std::pair<std::string, int32_t>> assigned;
};

// Partitions are assigned by the mirror itself, not by a group rebalance: a restarted mirror
// starts at once from its committed offsets instead of waiting out the dead member's
// session, and topics that appear later (a source's first snapshot) are added as found.
// The group id still names where the offsets are committed.
//
// Their offsets are looked up here (rd_kafka_committed) and assigned explicitly, never as
// RD_KAFKA_OFFSET_STORED: librdkafka fetches a stored offset only while no offset commit is
// in flight, and the mirror commits after every batch, so under a steady stream a partition
// added later (a source's first chunks) could wait a minute before its first fetch.
absl::Status Mirror::Impl::Discover() {
  const rd_kafka_metadata_t* md = nullptr;
  if (rd_kafka_resp_err_t err = rd_kafka_metadata(rk.get(), 1, nullptr, &md, 5000); err) {
    return KafkaError(absl::StrCat("kafka ", options.kafka.brokers, ": metadata"), err);
  }
  PartitionList add(rd_kafka_topic_partition_list_new(8));
  for (int i = 0; i < md->topic_cnt; ++i) {
    const rd_kafka_metadata_topic_t& t = md->topics[i];
    std::string source, suffix;
    if (t.err || !SplitTopic(t.topic, options.kafka.topic_prefix, &source, &suffix)) continue;
    if (std::find(options.sources.begin(), options.sources.end(), source) == options.sources.end()) continue;
    if (suffix != "chunks" && suffix != "snapshots" && !pipeline::ParseStreamKind(suffix).ok()) continue;
    for (int p = 0; p < t.partition_cnt; ++p) {
      if (!assigned.contains({t.topic, t.partitions[p].id})) {
        rd_kafka_topic_partition_list_add(add.get(), t.topic, t.partitions[p].id);
      }
    }
  }
  rd_kafka_metadata_destroy(md);
  if (add->cnt == 0) return absl::OkStatus();
  // The group's committed offsets; where there is none, the partition is read from its start
  // (auto.offset.reset = earliest). A lookup that fails is retried at the next discovery.
  if (rd_kafka_resp_err_t err = rd_kafka_committed(rk.get(), add.get(), 5000); err) {
    return KafkaError(absl::StrCat("kafka ", options.kafka.brokers, ": committed offsets"), err);
  }
  for (int i = 0; i < add->cnt; ++i) {
    rd_kafka_topic_partition_t& p = add->elems[i];
    if (p.err) return KafkaError(absl::StrCat("kafka: committed offset of ", p.topic, " [", p.partition, "]"), p.err);
    if (p.offset < 0) p.offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_error_t* error = rd_kafka_incremental_assign(rk.get(), add.get());
  if (error != nullptr) {
    absl::Status st = absl::InternalError(absl::StrCat("kafka: assign: ", rd_kafka_error_string(error)));
    rd_kafka_error_destroy(error);
    return st;
  }
  for (int i = 0; i < add->cnt; ++i) assigned.insert({add->elems[i].topic, add->elems[i].partition});
  return absl::OkStatus();
}

absl::StatusOr<SnapshotState*> Mirror::Impl::Snapshots(const std::string& source) {
  SnapshotState& st = snapshots[source];
  if (st.store == nullptr) {
    FERRY_RETURN_IF_ERROR(storage::ValidateSourceName(source));
    FERRY_RETURN_IF_ERROR(storage::CreateDirectory(archive->SourceDir(source)));  // the archive's modes
    FERRY_ASSIGN_OR_RETURN(st.store, storage::SnapshotStore::Open(archive->SnapshotDir(source), true));
  }
  if (st.writer == nullptr) {
    FERRY_ASSIGN_OR_RETURN(st.writer, BeginWhenUnlocked(*st.store, absl::Minutes(2)));
    // Chunks synced before a crash whose manifest never committed: their Kafka offsets may
    // be committed already, so they will not come again.
    FERRY_RETURN_IF_ERROR(st.writer->AdoptUnreferencedChunks());
  }
  return &st;
}

absl::Status Mirror::Impl::Handle(const rd_kafka_message_t* m) {
  const std::string topic = rd_kafka_topic_name(m->rkt);
  std::string source, suffix;
  if (!SplitTopic(topic, options.kafka.topic_prefix, &source, &suffix)) return absl::OkStatus();
  bool done = true;  // the message's effect is complete once the batch is synced
  if (suffix == "chunks") {
    FERRY_RETURN_IF_ERROR(HandleChunk(source, m));
  } else if (suffix == "snapshots") {
    FERRY_RETURN_IF_ERROR(HandleManifest(source, m));
  } else {
    auto kind = pipeline::ParseStreamKind(suffix);
    if (!kind.ok()) return absl::OkStatus();  // another topic under the prefix
    auto it = streams.find(topic);
    if (it == streams.end()) {
      FERRY_RETURN_IF_ERROR(storage::ValidateSourceName(source));
      StreamState s;
      s.source = source;
      s.kind = *kind;
      FERRY_ASSIGN_OR_RETURN(s.log, archive->Stream(source, *kind));
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
      s.shown.stream = suffix;
      it = streams.emplace(topic, std::move(s)).first;
    }
    FERRY_RETURN_IF_ERROR(HandleStream(it->second, m, &done));
  }
  if (done) committable[{topic, m->partition}] = m->offset + 1;
  return absl::OkStatus();
}

absl::Status Mirror::Impl::HandleStream(StreamState& s, const rd_kafka_message_t* m, bool* done) {
  const auto type = HeaderValue(m, kHeaderType).value_or("");
  const absl::string_view value(static_cast<const char*>(m->payload), m->len);
  if (type == "identity" || type == "file") {
    // Ordered after the frames before it: write those first.
    FERRY_RETURN_IF_ERROR(FlushStream(s));
    if (type == "file") {
      auto name = HeaderValue(m, kHeaderName);
      FERRY_ASSIGN_OR_RETURN(uint64_t sum, HeaderNumber(m, kHeaderChecksum));
      if (!name.has_value() || pipeline::Checksum64(value) != sum) {
        return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": side file damaged (checksum)"));
      }
      return s.log->PutFile(*name, value);
    }
    storage::SourceIdentity identity;
    for (absl::string_view line : absl::StrSplit(value, '\n', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
      identity[kv.first] = kv.second;
    }
    auto have = archive->GetIdentity(s.source);
    if (absl::IsNotFound(have.status())) return archive->SetIdentity(s.source, identity);
    if (!have.ok()) return have.status();
    if (*have != identity) {
      return absl::FailedPreconditionError(absl::StrCat(
          "source \"", s.source, "\": the primary region's identity (", absl::StrJoin(identity, " ", absl::PairFormatter("=")),
          ") differs from this archive's (", archive->path(), "); mirror into a new archive"));
    }
    return absl::OkStatus();
  }
  if (type != "frame") {
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": not a ferry stream message (",
                                            kHeaderType, "=\"", type, "\")"));
  }
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

absl::Status Mirror::Impl::AcceptFrame(StreamState& s, absl::string_view bytes, const rd_kafka_message_t* m) {
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

absl::Status Mirror::Impl::FlushStream(StreamState& s) {
  if (s.pending.headers.empty()) return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(s.log->Write(s.pending));  // synced when it returns
  const int64_t now = pipeline::NowUnixMicros();
  absl::MutexLock lock(&mu);
  for (const pipeline::FrameHeader& h : s.pending.headers) {
    const double lag = static_cast<double>(now - h.arrival_us) / 1e6;
    if (lag_ring.size() < 100000) {
      lag_ring.push_back(lag);
    } else {
      lag_ring[lag_next++ % lag_ring.size()] = lag;
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

absl::Status Mirror::Impl::HandleChunk(const std::string& source, const rd_kafka_message_t* m) {
  FERRY_ASSIGN_OR_RETURN(SnapshotState * st, Snapshots(source));
  FERRY_ASSIGN_OR_RETURN(uint64_t raw_len, HeaderNumber(m, kHeaderRawLen));
  if (raw_len > pipeline::kMaxFramePayload) {  // chunks are far smaller; never allocate what a header claims
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": chunk claims ", raw_len, " bytes"));
  }
  const std::string key(static_cast<const char*>(m->key), m->key_len);
  std::string raw, opened;
  absl::string_view payload(static_cast<const char*>(m->payload), m->len);
  if (auto key_id = HeaderValue(m, kHeaderKeyId)) {
    uint32_t id = 0;
    if (!absl::SimpleAtoi(*key_id, &id) || id == 0 || id > 65535) {
      return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": bad ", kHeaderKeyId, " \"", *key_id, "\""));
    }
    const pipeline::Keyring* keys = archive->keys().get();
    if (keys == nullptr || !keys->Has(static_cast<uint16_t>(id))) {
      const absl::Status missing = pipeline::MissingKeyError(static_cast<uint16_t>(id), keys);
      return absl::FailedPreconditionError(absl::StrCat("kafka message ", Where(m), ": chunk ", missing.message()));
    }
    absl::Status st = keys->Open(static_cast<uint16_t>(id), key, payload, &opened);
    if (!st.ok()) return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": chunk ", st.message()));
    payload = opened;
  }
  FERRY_RETURN_IF_ERROR(pipeline::DecompressZstd(payload, raw_len, Where(m), &raw));
  const storage::ChunkId id = pipeline::Sha256(raw);
  if (storage::ChunkIdHex(id) != key) {
    return absl::DataLossError(absl::StrCat("kafka message ", Where(m), ": chunk bytes do not hash to its key ", key));
  }
  if (st->writer->HasChunk(id)) return absl::OkStatus();
  FERRY_RETURN_IF_ERROR(st->writer->ImportChunk(raw));
  st->unsynced = true;
  absl::MutexLock lock(&mu);
  ++chunks_imported;
  return absl::OkStatus();
}

absl::Status Mirror::Impl::HandleManifest(const std::string& source, const rd_kafka_message_t* m) {
  FERRY_ASSIGN_OR_RETURN(SnapshotState * st, Snapshots(source));
  FERRY_ASSIGN_OR_RETURN(storage::SnapshotManifest manifest,
                         storage::ParseSnapshotManifest(absl::string_view(static_cast<const char*>(m->payload), m->len),
                                                        Where(m)));
  if (st->store->Find(manifest.id) != nullptr) return absl::OkStatus();
  // Its chunks come on another topic and may still be on their way: EndBatch commits it once
  // they are in, and holds the topic's offset back until then.
  st->waiting.push_back(std::move(manifest));
  return absl::OkStatus();
}

absl::Status Mirror::Impl::TryCommitManifests(SnapshotState& st) {
  while (!st.waiting.empty()) {
    auto committed = st.writer->CommitImported(st.waiting.front());
    if (absl::IsNotFound(committed.status())) return absl::OkStatus();  // chunks still to come
    if (!committed.ok()) return committed.status();
    spdlog::info("event=snapshot_imported id={} kind={}", committed->id, committed->Get("kind"));
    st.waiting.pop_front();
    // Chunks of later snapshots that came before this manifest go on to the next writer.
    const std::vector<storage::ChunkRef> leftovers = st.writer->Leftovers();
    st.writer.reset();
    st.unsynced = false;
    FERRY_ASSIGN_OR_RETURN(st.writer, BeginWhenUnlocked(*st.store, absl::Minutes(2)));
    st.writer->Adopt(leftovers);
    absl::MutexLock lock(&mu);
    ++snapshots_imported;
  }
  return absl::OkStatus();
}

absl::Status Mirror::Impl::EndBatch() {
  for (auto& [topic, s] : streams) FERRY_RETURN_IF_ERROR(FlushStream(s));
  std::set<std::string> blocked;  // sources with a manifest still waiting for chunks
  for (auto& [source, st] : snapshots) {
    FERRY_RETURN_IF_ERROR(TryCommitManifests(st));
    if (st.unsynced) {
      FERRY_RETURN_IF_ERROR(st.writer->SyncPacks());
      st.unsynced = false;
    }
    if (!st.waiting.empty()) blocked.insert(source);
  }
  // Everything handled is synced: commit the offsets (a manifest still waiting keeps its
  // partition's offset where it was, so a restart reads it again).
  PartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(committable.size())));
  for (const auto& [tp, offset] : committable) {
    std::string source, suffix;
    if (SplitTopic(tp.first, options.kafka.topic_prefix, &source, &suffix) && suffix == "snapshots" &&
        blocked.count(source) > 0) {
      continue;
    }
    rd_kafka_topic_partition_list_add(list.get(), tp.first.c_str(), tp.second)->offset = offset;
  }
  committable.clear();
  if (list->cnt > 0) {
    // Asynchronous: a lost commit only means redelivery, which dedup absorbs.
    (void)rd_kafka_commit(rk.get(), list.get(), 1);
  }
  Publish();
  return absl::OkStatus();
}

void Mirror::Impl::Publish() {
  std::vector<MirroredStream> out;
  const int64_t now = pipeline::NowUnixMicros();
  for (auto& [topic, s] : streams) {
    MirroredStream v = s.shown;
    int64_t low = 0, high = 0;
    PartitionList pos(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(pos.get(), topic.c_str(), 0);
    if (rd_kafka_position(rk.get(), pos.get()) == RD_KAFKA_RESP_ERR_NO_ERROR && pos->elems[0].offset >= 0 &&
        rd_kafka_get_watermark_offsets(rk.get(), topic.c_str(), 0, &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      v.kafka_lag = std::max<int64_t>(0, high - pos->elems[0].offset);
    }
    v.lag_seconds = v.kafka_lag == 0 || v.last_arrival_us == 0 ? 0 : static_cast<double>(now - v.last_arrival_us) / 1e6;
    out.push_back(std::move(v));
  }
  absl::MutexLock lock(&mu);
  shown = std::move(out);
}

Mirror::Mirror(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Mirror::~Mirror() = default;

absl::StatusOr<std::unique_ptr<Mirror>> Mirror::Create(const MirrorOptions& options) {
  if (options.sources.empty()) return absl::InvalidArgumentError("[mirror] sources is empty: nothing to mirror");
  if (options.group_id.empty()) return absl::InvalidArgumentError("[mirror] group_id is empty");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  storage::ArchiveOptions ao;
  ao.writable = true;
  ao.writer = options.writer;
  ao.segment_bytes = options.segment_bytes;
  FERRY_ASSIGN_OR_RETURN(impl->archive, storage::Archive::Open(options.archive_path, ao));
  FERRY_ASSIGN_OR_RETURN(rd_kafka_conf_t * conf,
                         NewConf(options.kafka, {{"group.id", options.group_id},
                                                 {"enable.auto.commit", "false"},
                                                 {"auto.offset.reset", "earliest"},
                                                 {"topic.metadata.refresh.interval.ms", "1000"},
                                                 {"fetch.wait.max.ms", "10"}}));
  FERRY_ASSIGN_OR_RETURN(impl->rk, NewClient(RD_KAFKA_CONSUMER, conf));
  rd_kafka_poll_set_consumer(impl->rk.get());
  return std::unique_ptr<Mirror>(new Mirror(std::move(impl)));
}

absl::Status Mirror::Run() {
  Impl& s = *impl_;
  spdlog::info("event=mirror_started group={} prefix={} sources={} archive={}", s.options.group_id,
               s.options.kafka.topic_prefix, absl::StrJoin(s.options.sources, ","), s.options.archive_path);
  absl::Status result;
  absl::Time last_publish = absl::Now();
  absl::Time last_discovery = absl::InfinitePast();
  bool kafka_ok = true;
  while (!s.stop) {
    if (absl::Now() - last_discovery > absl::Seconds(2)) {
      // Kafka away is not fatal: the mirror waits for it (and says so once per outage).
      absl::Status st = s.Discover();
      if (!st.ok() && kafka_ok) spdlog::warn("event=kafka_unavailable error=\"{}\" action=retrying", std::string(st.message()));
      kafka_ok = st.ok();
      last_discovery = absl::Now();
    }
    // A batch: whatever arrives within a few ms, then one group commit for all of it.
    Message first(rd_kafka_consumer_poll(s.rk.get(), 100));
    size_t n = 0, bytes = 0;
    for (Message m = std::move(first); m != nullptr && n < 10000 && bytes < (16u << 20);
         m = Message(rd_kafka_consumer_poll(s.rk.get(), 0))) {
      if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && m->err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART &&
            m->err != RD_KAFKA_RESP_ERR__TRANSPORT && m->err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
          spdlog::warn("event=kafka_consumer_error error=\"{}\"", rd_kafka_message_errstr(m.get()));
        }
        continue;
      }
      ++n;
      bytes += m->len;
      result = s.Handle(m.get());
      if (!result.ok()) break;
    }
    if (!result.ok()) break;
    if (n > 0 || absl::Now() - last_publish > absl::Seconds(1)) {
      result = s.EndBatch();
      if (!result.ok()) break;
      last_publish = absl::Now();
    }
  }
  // What was accepted before a failure is still written (it passed every check).
  absl::Status flushed = s.EndBatch();
  if (result.ok()) result = flushed;
  rd_kafka_consumer_close(s.rk.get());
  return result;
}

void Mirror::Stop() { impl_->stop = true; }

MirrorState Mirror::State() {
  Impl& s = *impl_;
  MirrorState st;
  st.group_id = s.options.group_id;
  absl::MutexLock lock(&s.mu);
  st.streams = s.shown;
  st.snapshots = s.snapshots_imported;
  st.chunks = s.chunks_imported;
  std::vector<double> lags = s.lag_ring;
  st.lag_samples = lags.size();
  if (!lags.empty()) {
    auto at = [&](double q) {
      const size_t i = std::min(lags.size() - 1, static_cast<size_t>(q * static_cast<double>(lags.size())));
      std::nth_element(lags.begin(), lags.begin() + static_cast<long>(i), lags.end());
      return lags[i];
    };
    st.lag_p50 = at(0.50);
    st.lag_p99 = at(0.99);
  }
  return st;
}

}  // namespace ferry::cross_region
