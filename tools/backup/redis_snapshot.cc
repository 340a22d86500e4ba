#include "tools/backup/redis_snapshot.h"

#include "absl/strings/str_cat.h"
#include "pipeline/check.h"

namespace ferry::tools {

absl::StatusOr<pipeline::SnapshotSink*> ArchiveRdbReceiver::BeginRdb(uint32_t epoch, const std::string& replid,
                                                                      uint64_t offset) {
  writer_.reset();
  // Reopened for every RDB: the store's snapshot list must include what retention or
  // another process changed since.
  store_.reset();
  FERRY_ASSIGN_OR_RETURN(store_, storage::SnapshotStore::Open(dir_, true));
  const pipeline::UnixMicros now = pipeline::NowUnixMicros();
  FERRY_ASSIGN_OR_RETURN(writer_, store_->Begin(now / 1000000, {{"kind", kRedisRdbKind},
                                                                {"class", "full"},
                                                                {"epoch", absl::StrCat(epoch)},
                                                                {"replid", replid},
                                                                {"offset", absl::StrCat(offset)},
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

}  // namespace ferry::tools
