// ferry changes: the archive's change events (pg-changes) as Debezium JSON, one per line.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cross_region/debezium.h"
#include "pipeline/change_event.h"
#include "pipeline/frame.h"
#include "storage/archive.h"
#include "tools/commands.h"

namespace ferry::tools {

int CmdChanges(const std::string& archive_path, const std::string& source, const std::string& topic_prefix) {
  auto archive = storage::Archive::Open(archive_path, storage::ArchiveOptions{});
  if (!archive.ok()) return Fail("changes", archive.status());
  auto log = (*archive)->Stream(source, pipeline::StreamKind::kPgChanges);
  if (!log.ok()) return Fail("changes", log.status());
  const cross_region::DebeziumOptions dz{topic_prefix, source, /*tombstones=*/false};
  // Whole transactions only: parts of one cut off by a restart were sent again whole.
  pipeline::ChangeAssembler assembler;
  std::string scratch;
  std::vector<cross_region::KafkaRecord> out;
  for (const storage::FrameLocation& loc : (*log)->frames()) {
    auto records = (*log)->ReadRecords(loc, &scratch);
    if (!records.ok()) return Fail("changes", records.status());
    for (const pipeline::RecordView& r : *records) {
      pipeline::ChangeBatch txn;
      auto complete = assembler.Add(r.payload, &txn);
      if (!complete.ok()) return Fail("changes", complete.status());
      if (!*complete) continue;
      out.clear();
      cross_region::RenderDebezium(txn, dz, txn.commit_ts / 1000, &out);
      for (const auto& m : out) std::printf("%s\n", m.value.c_str());
    }
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace ferry::tools
