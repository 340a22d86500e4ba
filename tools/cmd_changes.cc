// ferry changes: the archive's change events (pg-changes) as Debezium JSON, one per line.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cross_region/debezium.h"
#include "pipeline/check.h"
#include "pipeline/frame.h"
#include "storage/archive.h"
#include "tools/commands.h"

namespace ferry::tools {

absl::Status ForEachArchivedTransaction(const std::string& archive_path, const std::string& source,
                                        const std::function<void(const pipeline::ChangeBatch&)>& fn) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<storage::Archive> archive,
                         storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log, archive->Stream(source, pipeline::StreamKind::kPgChanges));
  // Whole transactions only: parts of one cut off by a restart were sent again whole.
  pipeline::ChangeAssembler assembler;
  std::string scratch;
  for (const storage::FrameLocation& loc : log->frames()) {
    FERRY_ASSIGN_OR_RETURN(std::vector<pipeline::RecordView> records, log->ReadRecords(loc, &scratch));
    for (const pipeline::RecordView& r : records) {
      pipeline::ChangeBatch txn;
      FERRY_ASSIGN_OR_RETURN(bool complete, assembler.Add(r.payload, &txn));
      if (complete) fn(txn);
    }
  }
  return absl::OkStatus();
}

int CmdChanges(const std::string& archive_path, const std::string& source, const std::string& topic_prefix) {
  const cross_region::DebeziumOptions dz{topic_prefix, source, /*tombstones=*/false};
  std::vector<cross_region::KafkaRecord> out;
  absl::Status st = ForEachArchivedTransaction(archive_path, source, [&](const pipeline::ChangeBatch& txn) {
    out.clear();
    cross_region::RenderDebezium(txn, dz, txn.commit_ts / 1000, &out);
    for (const auto& m : out) std::printf("%s\n", m.value.c_str());
  });
  if (!st.ok()) return Fail("changes", st);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace ferry::tools
