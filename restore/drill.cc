#include "restore/drill.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <chrono>
#include <filesystem>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "pipeline/check.h"
#include "restore/pg_restore.h"
#include "restore/redis_restore.h"
#include "restore/restore_all.h"
#include "storage/archive.h"
#include "storage/durable_file.h"
#include "storage/snapshot_store.h"

namespace ferry::restore {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The source's restorable window, from the archive alone.
absl::StatusOr<RestoreWindow> WindowOf(const std::string& archive_path, const config::SourceConfig& sc) {
  FERRY_ASSIGN_OR_RETURN(auto archive, storage::Archive::Open(archive_path, storage::ArchiveOptions{}));
  const bool redis = sc.kind == "redis";
  FERRY_ASSIGN_OR_RETURN(storage::StreamLog * log,
                         archive->Stream(sc.name, redis ? pipeline::StreamKind::kRedisCommands : pipeline::StreamKind::kPgWal));
  FERRY_ASSIGN_OR_RETURN(auto store, storage::SnapshotStore::Open(archive->SnapshotDir(sc.name), false));
  return redis ? RedisRestorableWindow(*log, *store) : PgRestorableWindow(*log, *store);
}

// Row counts of every table in every database that accepts connections.
absl::StatusOr<std::string> CountRows(const local::LocalPostgres& pg) {
  FERRY_ASSIGN_OR_RETURN(std::string dbs, pg.Query("select datname from pg_database where datallowconn and not datistemplate"));
  int64_t rows = 0, tables = 0;
  for (absl::string_view db : absl::StrSplit(dbs, '\n', absl::SkipEmpty())) {
    FERRY_ASSIGN_OR_RETURN(std::string names,
                           pg.Query("select format('%I.%I', schemaname, tablename) from pg_tables "
                                    "where schemaname not in ('pg_catalog', 'information_schema')",
                                    db));
    for (absl::string_view table : absl::StrSplit(names, '\n', absl::SkipEmpty())) {
      FERRY_ASSIGN_OR_RETURN(std::string n, pg.Query(absl::StrCat("select count(*) from ", table), db));
      int64_t count = 0;
      if (!absl::SimpleAtoi(n, &count)) {
        return absl::FailedPreconditionError(absl::StrCat("count of ", table, " is not a number: ", n));
      }
      rows += count;
      ++tables;
    }
  }
  return absl::StrCat(rows, " rows in ", tables, " tables");
}

void Check(SourceDrill& d, const std::string& name, const absl::Status& st, const std::string& detail = "ok") {
  d.checks.push_back({name, st.ok(), st.ok() ? detail : std::string(st.message())});
}

SourceDrill DrillPostgres(const config::Config& config, const config::SourceConfig& sc, const RestoreWindow& window,
                          pipeline::UnixMicros at, bool latest, const std::string& scratch,
                          const std::string& ferry_binary) {
  SourceDrill d{sc.name, "postgres", latest ? "latest" : pipeline::FormatUnixMicros(at)};
  PgTarget t;
  if (!latest) {
    t.kind = PgTarget::Kind::kTime;
    t.time = at;
  }
  const auto t0 = std::chrono::steady_clock::now();
  // The restore checks the WAL its target needs; this checks the whole window, so a drill
  // fails on damage before the newest backup too (PITR to those hours would be broken).
  Check(d, "window", CheckPgWindowWal(config.archive_path, sc.name), "every WAL frame of the restorable window intact");
  auto restored = RestorePostgresTo(config.archive_path, sc.name, t, scratch, ferry_binary);
  Check(d, "restore", restored.status());
  if (!restored.ok()) return d;
  auto started = StartRestoredPostgres(scratch, 0, 3600, restored->must_reach, sc.pg_bin);
  Check(d, "recovery", started.status(), started.ok() ? started->reached : "");
  if (!started.ok()) return d;
  d.rto_seconds = SecondsSince(t0);
  // RPO: what the archive could have restored at the target and the point actually reached.
  const pipeline::UnixMicros target_time = latest ? window.latest : at;
  if (started->last_commit != 0 && target_time > started->last_commit) {
    d.rpo_seconds = static_cast<double>(target_time - started->last_commit) / 1e6;
  }
  auto amcheck = started->server->RunTool({"pg_amcheck", "--install-missing", "--all", "-h", "127.0.0.1", "-p",
                                           absl::StrCat(started->server->port()), "-U", "postgres"});
  absl::Status amcheck_status = amcheck.status();
  if (amcheck.ok() && amcheck->exit_code != 0) {
    amcheck_status = absl::DataLossError(absl::StrCat("pg_amcheck exit ", amcheck->exit_code, ": ",
                                                      amcheck->out.substr(0, 300), amcheck->err.substr(0, 300)));
  }
  Check(d, "pg_amcheck", amcheck_status, "no corruption found");
  auto rows = CountRows(*started->server);
  Check(d, "rows", rows.status(), rows.value_or(""));
  (void)started->server->Stop();
  return d;
}

SourceDrill DrillRedis(const config::Config& config, const config::SourceConfig& sc, const RestoreWindow& window, pipeline::UnixMicros at,
                       bool latest, const std::string& scratch) {
  SourceDrill d{sc.name, "redis", latest ? "latest" : pipeline::FormatUnixMicros(at)};
  RedisTarget t;
  if (!latest) {
    t.kind = RedisTarget::Kind::kTime;
    t.time = at;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto restored = RestoreRedisTo(config.archive_path, sc.name, t, scratch);
  Check(d, "restore", restored.status());
  if (!restored.ok()) return d;
  auto redis = StartRestoredRedis(scratch, 0);
  Check(d, "load", redis.status(), "the whole AOF loaded");
  if (!redis.ok()) return d;
  d.rto_seconds = SecondsSince(t0);
  // Redis restores whole frames: by construction nothing archived before the target is left
  // out, so RPO is 0 unless the archive itself ends before the target.
  const pipeline::UnixMicros target_time = latest ? window.latest : at;
  if (target_time > window.latest) d.rpo_seconds = static_cast<double>(target_time - window.latest) / 1e6;
  auto keyspace = (*redis)->Command({"INFO", "keyspace"});
  int64_t keys = 0;
  if (keyspace.ok()) {
    for (absl::string_view line : absl::StrSplit(*keyspace, '\n')) {
      const size_t at_keys = line.find("keys=");
      int64_t n = 0;
      if (at_keys != absl::string_view::npos &&
          absl::SimpleAtoi(line.substr(at_keys + 5, line.find(',', at_keys) - at_keys - 5), &n)) {
        keys += n;
      }
    }
  }
  Check(d, "keys", keyspace.status(), absl::StrCat(keys, " keys"));
  (void)(*redis)->Stop();
  return d;
}

}  // namespace

bool SourceDrill::ok() const {
  if (checks.empty()) return false;
  for (const DrillCheck& c : checks) {
    if (!c.ok) return false;
  }
  return true;
}

bool DrillReport::ok() const {
  for (const SourceDrill& s : sources) {
    if (!s.ok()) return false;
  }
  return !sources.empty();
}

absl::StatusOr<DrillReport> RunDrill(const config::Config& config, const std::string& target, const std::string& ferry_binary) {
  const bool latest = target == "latest";
  const bool random = target == "random";
  pipeline::UnixMicros fixed = 0;
  if (!latest && !random) {
    auto t = pipeline::ParseRfc3339(target);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("--target: expected latest, random or an RFC 3339 time, got \"", target, "\""));
    fixed = *t;
  }
  DrillReport report;
  report.started = pipeline::NowUnixMicros();
  std::mt19937_64 rng(static_cast<uint64_t>(report.started));
  for (const config::SourceConfig& sc : config.sources) {
    auto window = WindowOf(config.archive_path, sc);
    if (!window.ok() || !window->valid) {
      SourceDrill d{sc.name, sc.kind, target};
      Check(d, "restore", absl::FailedPreconditionError(window.ok() ? absl::StrCat("nothing restorable: ", window->why_not)
                                                                     : std::string(window.status().message())));
      report.sources.push_back(d);
      continue;
    }
    pipeline::UnixMicros at = fixed;
    if (random) {
      at = window->earliest + static_cast<pipeline::UnixMicros>(
                                  rng() % static_cast<uint64_t>(std::max<int64_t>(1, window->latest - window->earliest)));
    }
    auto scratch = local::MakeTempDir(absl::StrCat("ferry-drill-", sc.name));
    if (!scratch.ok()) return scratch.status();
    const std::string dir = *scratch + "/restore";
    report.sources.push_back(sc.kind == "redis" ? DrillRedis(config, sc, *window, at, latest, dir)
                                                : DrillPostgres(config, sc, *window, at, latest, dir, ferry_binary));
    std::error_code ec;
    std::filesystem::remove_all(*scratch, ec);
  }
  return report;
}

std::string DrillTable(const DrillReport& report) {
  std::string out = absl::StrFormat("%-12s %-9s %-28s %7s %7s  %s\n", "source", "kind", "target", "RTO s", "RPO s", "checks");
  for (const SourceDrill& s : report.sources) {
    std::vector<std::string> checks;
    for (const DrillCheck& c : s.checks) checks.push_back(absl::StrCat(c.name, c.ok ? " ok" : " FAILED"));
    absl::StrAppend(&out, absl::StrFormat("%-12s %-9s %-28s %7.1f %7.1f  %s\n", s.source, s.kind, s.target, s.rto_seconds,
                                          s.rpo_seconds, absl::StrJoin(checks, ", ")));
  }
  for (const SourceDrill& s : report.sources) {
    for (const DrillCheck& c : s.checks) {
      absl::StrAppend(&out, "  ", s.source, " ", c.name, ": ", c.detail, "\n");
    }
  }
  absl::StrAppend(&out, report.ok() ? "drill passed\n" : "drill FAILED\n");
  return out;
}

std::string DrillJson(const DrillReport& report) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("started");
  w.String(pipeline::FormatUnixMicros(report.started).c_str());
  w.Key("ok");
  w.Bool(report.ok());
  w.Key("sources");
  w.StartArray();
  for (const SourceDrill& s : report.sources) {
    w.StartObject();
    w.Key("source");
    w.String(s.source.c_str());
    w.Key("kind");
    w.String(s.kind.c_str());
    w.Key("target");
    w.String(s.target.c_str());
    w.Key("rto_seconds");
    w.Double(s.rto_seconds);
    w.Key("rpo_seconds");
    w.Double(s.rpo_seconds);
    w.Key("ok");
    w.Bool(s.ok());
    w.Key("checks");
    w.StartArray();
    for (const DrillCheck& c : s.checks) {
      w.StartObject();
      w.Key("check");
      w.String(c.name.c_str());
      w.Key("ok");
      w.Bool(c.ok);
      w.Key("detail");
      w.String(c.detail.c_str());
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

absl::StatusOr<DrillReport> ParseDrillJson(absl::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  auto bad = [] { return absl::DataLossError("drill report is not the JSON ferry drill writes"); };
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("started") || !doc["started"].IsString() ||
      !doc.HasMember("sources") || !doc["sources"].IsArray()) {
    return bad();
  }
  DrillReport r;
  auto started = pipeline::ParseRfc3339(doc["started"].GetString());
  if (!started.ok()) return bad();
  r.started = *started;
  for (const auto& s : doc["sources"].GetArray()) {
    if (!s.IsObject() || !s.HasMember("source") || !s.HasMember("checks") || !s["checks"].IsArray()) return bad();
    SourceDrill d;
    d.source = s["source"].GetString();
    if (s.HasMember("kind") && s["kind"].IsString()) d.kind = s["kind"].GetString();
    if (s.HasMember("target") && s["target"].IsString()) d.target = s["target"].GetString();
    if (s.HasMember("rto_seconds") && s["rto_seconds"].IsNumber()) d.rto_seconds = s["rto_seconds"].GetDouble();
    if (s.HasMember("rpo_seconds") && s["rpo_seconds"].IsNumber()) d.rpo_seconds = s["rpo_seconds"].GetDouble();
    for (const auto& c : s["checks"].GetArray()) {
      if (!c.IsObject() || !c.HasMember("check") || !c.HasMember("ok") || !c["ok"].IsBool()) return bad();
      d.checks.push_back({c["check"].GetString(), c["ok"].GetBool(),
                          c.HasMember("detail") && c["detail"].IsString() ? c["detail"].GetString() : ""});
    }
    r.sources.push_back(std::move(d));
  }
  return r;
}

absl::Status SaveLastDrill(const std::string& archive_path, const DrillReport& report) {
  const std::string dir = archive_path + "/drills";
  FERRY_RETURN_IF_ERROR(storage::CreateDirectory(dir));  // the archive's modes (durable_file.h)
  return storage::WriteFileAtomically(dir, "last.json", DrillJson(report) + "\n");
}

absl::StatusOr<DrillReport> LoadLastDrill(const std::string& archive_path) {
  FERRY_ASSIGN_OR_RETURN(std::string json, storage::ReadWholeFile(archive_path + "/drills/last.json"));
  return ParseDrillJson(json);
}

}  // namespace ferry::restore
