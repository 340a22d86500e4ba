// The mirror's loop: assigns the configured sources' partitions, reads a batch of messages,
// hands each to the stream or snapshot importer (mirror_import.h), then syncs and commits.
#include "cross_region/mirror.h"

#include <algorithm>
#include <map>
#include <set>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cross_region/kafka_internal.h"
#include "cross_region/mirror_import.h"
#include "pipeline/check.h"
#include "storage/archive.h"

namespace ferry::cross_region {

namespace {

// Topic -> (source, suffix) under the prefix.
bool SplitTopic(absl::string_view topic, absl::string_view prefix, std::string* source, std::string* suffix) {
  if (!absl::ConsumePrefix(&topic, prefix) || !absl::ConsumePrefix(&topic, ".")) return false;
  const size_t dot = topic.rfind('.');
  if (dot == absl::string_view::npos) return false;
  *source = std::string(topic.substr(0, dot));
  *suffix = std::string(topic.substr(dot + 1));
  return true;
}

}  // namespace

struct Mirror::Impl {
  Impl(MirrorOptions o, std::unique_ptr<storage::Archive> a)
      : options(std::move(o)), archive(std::move(a)), streams(*archive, stats), snapshots(*archive, stats) {}

  // Hands a message to its importer and notes its offset as committable once handled.
  absl::Status Handle(const rd_kafka_message_t* m);
  // Writes and syncs what the batch brought, then commits the offsets it covers.
  absl::Status EndBatch();
  // Updates what State() shows of the streams.
  void Publish();
  // Assigns the partitions of every topic of the configured sources that exists by now.
  absl::Status Discover();

  const MirrorOptions options;
  const std::unique_ptr<storage::Archive> archive;
  KafkaHandle rk;
  std::atomic<bool> stop{false};
  MirrorStats stats;  // before the importers, which keep a reference to it
  StreamImporter streams;
  SnapshotImporter snapshots;
  // Per partition: the offset to commit once the batch is synced (last message fully handled + 1).
  std::map<std::pair<std::string, int32_t>, int64_t> committable;
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
    // The code as KafkaError classifies it; the message with the error's own text.
    const absl::StatusCode code = KafkaError("kafka: assign", rd_kafka_error_code(error)).code();
    absl::Status st(code, absl::StrCat("kafka: assign: ", rd_kafka_error_string(error)));
    rd_kafka_error_destroy(error);
    return st;
  }
  for (int i = 0; i < add->cnt; ++i) assigned.insert({add->elems[i].topic, add->elems[i].partition});
  return absl::OkStatus();
}

absl::Status Mirror::Impl::Handle(const rd_kafka_message_t* m) {
  const std::string topic = rd_kafka_topic_name(m->rkt);
  std::string source, suffix;
  if (!SplitTopic(topic, options.kafka.topic_prefix, &source, &suffix)) return absl::OkStatus();
  bool done = true;  // the message's effect is complete once the batch is synced
  if (suffix == "chunks") {
    FERRY_RETURN_IF_ERROR(snapshots.HandleChunk(source, m));
  } else if (suffix == "snapshots") {
    FERRY_RETURN_IF_ERROR(snapshots.HandleManifest(source, m));
  } else {
    auto kind = pipeline::ParseStreamKind(suffix);
    if (!kind.ok()) return absl::OkStatus();  // another topic under the prefix
    FERRY_RETURN_IF_ERROR(streams.Handle(topic, source, *kind, m, &done));
  }
  if (done) committable[{topic, m->partition}] = m->offset + 1;
  return absl::OkStatus();
}

absl::Status Mirror::Impl::EndBatch() {
  FERRY_RETURN_IF_ERROR(streams.Flush());
  std::set<std::string> blocked;  // sources with a manifest still waiting for chunks
  FERRY_RETURN_IF_ERROR(snapshots.EndBatch(&blocked));
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
  std::vector<MirroredStream> out = streams.Shown(rk.get());
  absl::MutexLock lock(&stats.mu);
  stats.shown = std::move(out);
}

Mirror::Mirror(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Mirror::~Mirror() = default;

absl::StatusOr<std::unique_ptr<Mirror>> Mirror::Create(const MirrorOptions& options) {
  if (options.sources.empty()) return absl::InvalidArgumentError("[mirror] sources is empty: nothing to mirror");
  if (options.group_id.empty()) return absl::InvalidArgumentError("[mirror] group_id is empty");
  storage::ArchiveOptions ao;
  ao.writable = true;
  ao.writer = options.writer;
  ao.segment_bytes = options.segment_bytes;
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<storage::Archive> archive, storage::Archive::Open(options.archive_path, ao));
  auto impl = std::make_unique<Impl>(options, std::move(archive));
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
  absl::MutexLock lock(&s.stats.mu);
  st.streams = s.stats.shown;
  st.snapshots = s.stats.snapshots_imported;
  st.chunks = s.stats.chunks_imported;
  std::vector<double> lags = s.stats.lag_ring;
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
