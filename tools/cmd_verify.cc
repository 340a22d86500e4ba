// ferry verify: every frame's checksums, position continuity, and a digest per stream that a
// byte-identical mirror shares.
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backup/pg_backup.h"
#include "storage/archive.h"
#include "storage/snapshot_store.h"
#include "tools/commands.h"

namespace ferry::tools {

namespace {

// What verify builds as it goes: the JSON it prints at the end with --json, and whether
// everything checked out. Without --json each stream and snapshot prints its line at once.
struct VerifyReport {
  bool json = false;
  bool ok = true;
  std::string out;
};

// Checks one stream's frames and appends its JSON; prints each damaged frame on stderr.
void VerifyStream(storage::Archive& archive, const std::string& src, pipeline::StreamKind kind, bool first,
                  VerifyReport& report) {
  const std::string stream(pipeline::StreamKindName(kind));
  std::vector<storage::Damage> damage;
  uint64_t digest = 0, unopened = 0;
  size_t frames = 0;
  auto log = archive.Stream(src, kind);
  if (!log.ok()) {
    damage.push_back({"", 0, std::string(log.status().message())});
  } else {
    digest = (*log)->Verify(&damage, &unopened);
    frames = (*log)->frames().size();
  }
  report.ok = report.ok && damage.empty();
  absl::StrAppend(&report.out, first ? "" : ",", "{\"stream\":", JsonString(stream), ",\"frames\":", frames,
                  ",\"unopened\":", unopened, ",\"digest\":\"", absl::StrFormat("%016x", digest),
                  "\",\"damage\":[");
  for (size_t di = 0; di < damage.size(); ++di) {
    const auto& d = damage[di];
    absl::StrAppend(&report.out, di ? "," : "", "{\"file\":", JsonString(d.file), ",\"offset\":", d.offset,
                    ",\"reason\":", JsonString(d.reason), "}");
    if (!report.json) {
      std::fprintf(stderr, "ferry verify: damaged: %s at offset %llu: %s\n", d.file.c_str(),
                   static_cast<unsigned long long>(d.offset), d.reason.c_str());
    }
  }
  report.out += "]}";
  if (!report.json) {
    std::printf("%-16s %-16s frames=%zu digest=%016llx %s%s\n", src.c_str(), stream.c_str(), frames,
                static_cast<unsigned long long>(digest), damage.empty() ? "ok" : "DAMAGED",
                unopened > 0 ? absl::StrCat(" (", unopened, " sealed frames checked by checksum only: no key)").c_str()
                             : "");
  }
}

// Snapshots: every chunk, and PostgreSQL's own manifest checksums for base backups. One
// result per snapshot id, or one for the manifests when the store cannot be opened.
std::vector<std::pair<std::string, absl::Status>> CheckSnapshots(storage::Archive& archive, const std::string& src) {
  auto store = storage::SnapshotStore::Open(archive.SnapshotDir(src), false);
  std::vector<std::pair<std::string, absl::Status>> results;
  if (!store.ok()) {
    results.emplace_back("(manifests)", store.status());
    return results;
  }
  for (const auto& m : (*store)->snapshots()) {
    absl::Status st = backup::VerifySnapshot(**store, m);
    // Without any key a sealed snapshot is checked as far as its checksums go; with keys,
    // a chunk under a key they lack is damage.
    if (absl::IsFailedPrecondition(st) && archive.keys() == nullptr) {
      for (const auto& e : m.entries) {
        if (absl::Status stored = (*store)->CheckStored(e); !stored.ok()) st = stored;
      }
    }
    results.emplace_back(m.id, st);
  }
  return results;
}

void VerifySnapshots(storage::Archive& archive, const std::string& src, VerifyReport& report) {
  const auto results = CheckSnapshots(archive, src);
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& [id, st] = results[i];
    const bool sealed = absl::IsFailedPrecondition(st) && archive.keys() == nullptr;
    report.ok = report.ok && (st.ok() || sealed);
    absl::StrAppend(&report.out, i ? "," : "", "{\"id\":", JsonString(id),
                    ",\"ok\":", st.ok() || sealed ? "true" : "false", ",\"unopened\":", sealed ? "true" : "false",
                    ",\"reason\":", JsonString(std::string(st.message())), "}");
    if (!report.json) {
      if (!st.ok() && !sealed) std::fprintf(stderr, "ferry verify: damaged: %s\n", std::string(st.message()).c_str());
      std::printf("%-16s snapshot %-20s %s\n", src.c_str(), id.c_str(),
                  st.ok() ? "ok" : sealed ? "checksums ok, not opened (sealed: no key)" : "DAMAGED");
    }
  }
}

}  // namespace

int CmdVerify(const std::string& archive_path, const std::string& only_source, bool json) {
  // A survey open: damage found while opening a stream is reported with the rest.
  storage::ArchiveOptions options;
  options.survey = true;
  auto archive = storage::Archive::Open(archive_path, options);
  if (!archive.ok()) return Fail("verify", archive.status());
  std::vector<std::string> sources = (*archive)->Sources();
  if (!only_source.empty()) {
    if (std::find(sources.begin(), sources.end(), only_source) == sources.end()) {
      return Fail("verify", absl::NotFoundError(absl::StrCat("archive ", archive_path,
                                                             " has no source \"", only_source, "\"")));
    }
    sources = {only_source};
  }
  VerifyReport report;
  report.json = json;
  report.out = "{\"archive\":" + JsonString(archive_path) + ",\"sources\":[";
  for (size_t si = 0; si < sources.size(); ++si) {
    const std::string& src = sources[si];
    absl::StrAppend(&report.out, si ? "," : "", "{\"name\":", JsonString(src), ",\"streams\":[");
    const auto kinds = (*archive)->Streams(src);
    for (size_t ki = 0; ki < kinds.size(); ++ki) VerifyStream(**archive, src, kinds[ki], ki == 0, report);
    report.out += "],\"snapshots\":[";
    VerifySnapshots(**archive, src, report);
    report.out += "]}";
  }
  absl::StrAppend(&report.out, "],\"ok\":", report.ok ? "true" : "false", "}");
  if (json) std::printf("%s\n", report.out.c_str());
  return report.ok ? 0 : 1;
}

}  // namespace ferry::tools
