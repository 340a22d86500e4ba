#include "backup/redis_snapshot.h"

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"
#include "storage/stream_log.h"

namespace ferry::backup {

absl::StatusOr<pipeline::SnapshotSink*> ArchiveRdbReceiver::BeginRdb(pipeline::StreamPosition at,
                                                                      const std::string& replid) {
  writer_.reset();
  // Reopened for every RDB: the store's snapshot list must include what retention or
  // another process changed since.
  store_.reset();
  FERRY_ASSIGN_OR_RETURN(store_, storage::SnapshotStore::Open(dir_, true));
  const pipeline::UnixMicros now = pipeline::NowUnixMicros();
  FERRY_ASSIGN_OR_RETURN(writer_, store_->Begin(now / 1000000, {{"kind", kRedisRdbKind},
                                                                {"class", "full"},
                                                                {"epoch", absl::StrCat(at.epoch)},
                                                                {"replid", replid},
                                                                {"offset", absl::StrCat(at.offset)},
                                                                {"start_time", pipeline::FormatUnixMicros(now)}}));
  return writer_.get();
}

absl::Status ArchiveRdbReceiver::CommitRdb() {
  if (writer_ == nullptr) return absl::FailedPreconditionError("CommitRdb without BeginRdb");
  writer_->SetMeta("end_time", pipeline::FormatUnixMicros(pipeline::NowUnixMicros()));
  FERRY_ASSIGN_OR_RETURN(last_, writer_->Commit());
  writer_.reset();
  return absl::OkStatus();
}

void ArchiveRdbReceiver::AbortRdb() { writer_.reset(); }

absl::optional<std::string> DueRedisSnapshot(const storage::SnapshotStore& snapshots, const config::SourceConfig& source,
                                             pipeline::UnixMicros now) {
  pipeline::UnixMicros newest = 0;
  for (const auto& m : snapshots.snapshots()) {
    if (m.Get("kind") != kRedisRdbKind) continue;
    auto end = pipeline::ParseRfc3339(m.Get("end_time"));
    if (end.ok()) newest = std::max(newest, *end);
  }
  // None yet: the stream's own full resync brings the first one.
  if (newest == 0 || absl::Microseconds(now - newest) < source.snapshot_every) return absl::nullopt;
  return std::string("full");
}

absl::StatusOr<storage::SnapshotManifest> TakeRedisSnapshot(storage::Archive& archive, const config::SourceConfig& source,
                                                            const std::atomic<bool>* cancel) {
  // `ferry backup` writes beside the service, without the archive's lock: the same key checks.
  FERRY_RETURN_IF_ERROR(storage::CheckKeys(archive.path(), archive.keys().get(), /*writing=*/true));
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, archive.Stream(source.name, pipeline::StreamKind::kRedisCommands));
  FERRY_ASSIGN_OR_RETURN(std::string file, log->GetFile(client::redis::kReplicationFile));
  FERRY_ASSIGN_OR_RETURN(client::redis::RedisResume stream, client::redis::ParseReplicationFile(file));
  FERRY_ASSIGN_OR_RETURN(auto conn, client::redis::ReplicaConnection::Connect(source.redis, -1, /*rdb_only=*/true));
  FERRY_ASSIGN_OR_RETURN(client::redis::SyncStart start, conn->Psync("", -1));
  if (!start.full) {
    // A primary answers PSYNC ? -1 with a full resync; anything else is not one to snapshot.
    return absl::FailedPreconditionError("PSYNC ? -1 was not answered with +FULLRESYNC");
  }
  if (start.replid != stream.replid) {
    return absl::FailedPreconditionError(absl::StrCat("the primary's replication id ", start.replid,
                                                      " is not the archived stream's ", stream.replid,
                                                      "; the snapshot is retried later"));
  }
  ArchiveRdbReceiver receiver(archive.SnapshotDir(source.name));
  FERRY_ASSIGN_OR_RETURN(pipeline::SnapshotSink * sink, receiver.BeginRdb({stream.epoch, start.offset}, start.replid));
  absl::Status st = sink->BeginFile(kRedisRdbFile, 0600, pipeline::NowUnixMicros() / 1000000);
  if (st.ok()) {
    st = conn->ReceiveRdb([&](absl::string_view bytes) {
                if (cancel != nullptr && cancel->load()) return absl::CancelledError("service stopping");
                return sink->Write(bytes);
              }).status();
  }
  if (st.ok()) st = sink->EndFile();
  if (st.ok()) st = receiver.CommitRdb();
  if (!st.ok()) {
    receiver.AbortRdb();
    return st;
  }
  return receiver.last();
}

}  // namespace ferry::backup
