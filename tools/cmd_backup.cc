// ferry backup: takes a PostgreSQL base backup into the archive now (beside a running
// `ferry run`, which keeps streaming WAL meanwhile).
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "backup/pg_backup.h"
#include "backup/redis_snapshot.h"
#include "config/config.h"
#include "local/progress_bar.h"
#include "storage/archive.h"
#include "tools/commands.h"

namespace ferry::tools {

int CmdBackup(const std::string& config_path, const std::string& source_name, bool json, int wal_wait_seconds) {
  auto config = config::LoadConfig(config_path);
  if (!config.ok()) return Fail("backup", config.status());
  const config::SourceConfig* source = nullptr;
  for (const auto& s : config->sources) {
    if (s.name == source_name) source = &s;
  }
  if (source == nullptr) {
    return Fail("backup", absl::InvalidArgumentError(absl::StrCat(
                              "no [[source]] named \"", source_name, "\" in ", config_path)));
  }
  if (source->kind == "redis") {
    // An RDB snapshot now, on a connection of its own while `ferry run` streams the commands.
    auto archive = storage::Archive::Open(config->archive_path, storage::ArchiveOptions{});
    if (!archive.ok()) return Fail("backup", archive.status());
    auto m = backup::TakeRedisSnapshot(**archive, *source, nullptr);
    if (!m.ok()) return Fail("backup", m.status());
    if (json) {
      std::printf("{\"id\":%s,\"kind\":\"redis-rdb\",\"epoch\":%s,\"offset\":%s,\"end_time\":%s,\"bytes\":%llu}\n",
                  JsonString(m->id).c_str(), JsonString(m->Get("epoch")).c_str(), JsonString(m->Get("offset")).c_str(),
                  JsonString(m->Get("end_time")).c_str(), static_cast<unsigned long long>(m->RawBytes()));
    } else {
      std::printf("snapshot %s of %s: RDB at epoch %s offset %s, %.1f MiB\n", m->id.c_str(), source_name.c_str(),
                  m->Get("epoch").c_str(), m->Get("offset").c_str(), static_cast<double>(m->RawBytes()) / (1 << 20));
    }
    return 0;
  }
  if (source->kind != "postgres") {
    return Fail("backup", absl::InvalidArgumentError(absl::StrCat(
                              "source \"", source_name, "\" is not a postgres or redis source")));
  }
  std::string snapshot_class = "full";
  {
    auto archive = storage::Archive::Open(config->archive_path, storage::ArchiveOptions{});
    if (!archive.ok()) return Fail("backup", archive.status());
    auto store = storage::SnapshotStore::Open((*archive)->SnapshotDir(source_name), false);
    if (!store.ok()) return Fail("backup", store.status());
    // Taken now, classed as the schedule would class it (full once full_backup_every is up).
    auto due = backup::DueBackup(**store, *source, pipeline::NowUnixMicros());
    snapshot_class = due.has_value() ? *due : "incremental";
  }
  local::ProgressBar bar(absl::StrCat("backup ", source_name));
  auto outcome = backup::TakePostgresBackup(config->archive_path, *source, snapshot_class, nullptr,
                                    [&](uint64_t done, uint64_t total) { bar.Update(done, total); },
                                    absl::Seconds(wal_wait_seconds));
  if (!outcome.ok()) return Fail("backup", outcome.status());
  const auto& m = outcome->manifest;
  const auto& st = outcome->stats;
  if (json) {
    std::printf("{\"id\":%s,\"class\":%s,\"increment_of\":%s,\"start_lsn\":%s,\"end_lsn\":%s,\"end_time\":%s,"
                "\"received_bytes\":%s,\"bytes\":%llu,\"chunks\":%llu,\"new_chunks\":%llu,\"new_stored_bytes\":%llu}\n",
                JsonString(m.id).c_str(), JsonString(m.Get("class")).c_str(), JsonString(m.Get("increment_of")).c_str(),
                JsonString(m.Get("start_lsn")).c_str(), JsonString(m.Get("end_lsn")).c_str(),
                JsonString(m.Get("end_time")).c_str(), m.Get("received_bytes").c_str(),
                static_cast<unsigned long long>(st.raw_bytes),
                static_cast<unsigned long long>(st.chunks),
                static_cast<unsigned long long>(st.new_chunks),
                static_cast<unsigned long long>(st.new_stored_bytes));
  } else {
    std::printf("backup %s (%s) of %s: WAL %s .. %s, %s files, %.1f MiB; stored %.1f MiB new "
                "(%llu of %llu chunks new)\n",
                m.id.c_str(), m.Get("class").c_str(), source_name.c_str(),
                m.Get("start_lsn").c_str(), m.Get("end_lsn").c_str(), m.Get("files").c_str(),
                static_cast<double>(st.raw_bytes) / (1 << 20),
                static_cast<double>(st.new_stored_bytes) / (1 << 20),
                static_cast<unsigned long long>(st.new_chunks),
                static_cast<unsigned long long>(st.chunks));
    if (!m.Get("increment_of").empty()) {
      uint64_t received = 0;
      (void)absl::SimpleAtoi(m.Get("received_bytes"), &received);
      std::printf("block-incremental against %s: the server sent %.1f MiB of changed blocks; stored whole\n",
                  m.Get("increment_of").c_str(), static_cast<double>(received) / (1 << 20));
    }
  }
  return 0;
}

}  // namespace ferry::tools
