// ferry status: the running service's live state, read from its /status endpoint.
// ferry config check: validate a config and print the effective values.
#include <httplib.h>
#include <rapidjson/document.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "service/http.h"
#include "tools/commands.h"

namespace ferry::tools {

int CmdStatus(const std::string& config_path, bool json) {
  auto config = config::LoadConfig(config_path);
  if (!config.ok()) return Fail("status", config.status());
  if (config->http_listen.empty()) {
    return Fail("status", absl::FailedPreconditionError(absl::StrCat(
                              config_path, " has no [http] listen: the service publishes its state there; add it and restart")));
  }
  auto address = config::ParseListen(config->http_listen);
  if (!address.ok()) return Fail("status", address.status());
  // A service listening on every address is reached on loopback.
  const std::string host = address->host.empty() || address->host == "0.0.0.0" ? "127.0.0.1" : address->host;
  httplib::Client client(host, address->port);
  if (!config->http_token.empty()) client.set_bearer_token_auth(config->http_token);
  auto res = client.Get("/status");
  if (!res || res->status != 200) {
    return Fail("status", absl::UnavailableError(absl::StrCat("no answer from the service at ", config->http_listen,
                                                              ": is ferry run --config ", config_path, " running?")));
  }
  if (json) {
    std::printf("%s", res->body.c_str());
    return 0;
  }
  rapidjson::Document doc;
  doc.Parse(res->body.c_str());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("sources")) {
    return Fail("status", absl::DataLossError("the service's /status is not the JSON this ferry understands"));
  }
  std::printf("%-14s %-9s %-5s %20s %20s %10s %11s\n", "source", "kind", "up", "received", "synced", "reconnects",
              "snapshot age");
  for (const auto& s : doc["sources"].GetArray()) {
    std::printf("%-14s %-9s %-5s %20llu %20llu %10llu %10.0fs\n", s["name"].GetString(), s["kind"].GetString(),
                s["up"].GetBool() ? "yes" : "NO", static_cast<unsigned long long>(s["received"].GetUint64()),
                static_cast<unsigned long long>(s["synced"].GetUint64()),
                static_cast<unsigned long long>(s["reconnects"].GetUint64()), s["snapshot_age_seconds"].GetDouble());
  }
  const bool healthy = doc["healthy"].GetBool();
  std::printf("%s\n", healthy ? "healthy" : "UNHEALTHY:");
  for (const auto& why : doc["unhealthy_because"].GetArray()) std::printf("  %s\n", why.GetString());
  return healthy ? 0 : 1;
}

int CmdConfigCheck(const std::string& config_path) {
  auto config = config::LoadConfig(config_path);
  if (!config.ok()) return Fail("config check", config.status());
  const config::Config& c = *config;
  auto d = [](absl::Duration x) { return absl::FormatDuration(x); };
  std::printf("%s: ok\n", config_path.c_str());
  std::printf("region = \"%s\"\ndrill_every = \"%s\"\n\n[archive]\npath = \"%s\"\nwriter = \"%s\"\nsegment_mb = %llu\n"
              "zstd_level = %d\nverify_mb_per_s = %d\nverify_sweep_every = \"%s\"\n\n[retention]\nfull = \"%s\"\nincremental = \"%s\"\nwal = \"%s\"\nredis_snapshots = \"%s\"\n\n"
              "[marks]\npause_redis = \"%s\"\n\n[http]\nlisten = \"%s\"\n",
              c.region.c_str(), d(c.drill_every).c_str(), c.archive_path.c_str(),
              std::string(storage::WriterKindName(c.writer)).c_str(),
              static_cast<unsigned long long>(c.segment_bytes >> 20), c.zstd_level, c.verify_mb_per_s, d(c.verify_sweep_every).c_str(),
              d(c.retention_full).c_str(),
              d(c.retention_incremental).c_str(), d(c.retention_wal).c_str(), d(c.retention_redis_snapshots).c_str(),
              d(c.mark_pause_redis).c_str(), c.http_listen.c_str());
  if (c.keys != nullptr) {
    std::printf("# [archive] encryption_key_file = \"%s\": AES-256-GCM, new data sealed with key %u\n",
                c.encryption_key_file.c_str(), static_cast<unsigned>(c.keys->current_id()));
  }
  if (!c.kafka_brokers.empty()) {
    // Properties are listed by name only: a value may be a credential.
    std::string props;
    for (const auto& [k, v] : c.kafka_properties) absl::StrAppend(&props, props.empty() ? "" : ", ", k);
    std::printf("\n[kafka]\nbrokers = \"%s\"\ntopic_prefix = \"%s\"\nmax_message_bytes = %lld\ntombstones = %s\n"
                "# properties: %s\n",
                c.kafka_brokers.c_str(), c.kafka_topic_prefix.c_str(), static_cast<long long>(c.kafka_max_message_bytes),
                c.kafka_tombstones ? "true" : "false", props.empty() ? "(none)" : props.c_str());
  }
  if (!c.mirror_sources.empty()) {
    std::printf("\n[mirror]\nsources = [\"%s\"]\ngroup_id = \"%s\"\napply_redis = \"%s\"\napply_postgres = \"%s\"\n",
                absl::StrJoin(c.mirror_sources, "\", \"").c_str(), c.mirror_group_id.c_str(), c.mirror_apply_redis.c_str(),
                c.mirror_apply_postgres.c_str());
  }
  for (const config::SourceConfig& s : c.sources) {
    std::printf("\n[[source]]\nname = \"%s\"\nkind = \"%s\"\nack = \"%s\"\ndown_after = \"%s\"\ncommit_delay = \"%s\"\n"
                "scheduled_backups = %s\n",
                s.name.c_str(), s.kind.c_str(), s.ack == pipeline::AckPolicy::kLocal ? "local" : "local+kafka",
                d(s.down_after).c_str(), s.commit_delay_auto ? "auto" : d(s.commit_delay).c_str(), s.scheduled_backups ? "true" : "false");
    if (s.kind == "postgres") {
      std::printf("conninfo = \"%s\"\nphysical_slot = \"%s\"\napplication_name = \"%s\"\nfull_backup_every = \"%s\"\n"
                  "incremental_every = \"%s\"\n",
                  s.conninfo.c_str(), s.physical_slot.c_str(), s.application_name.c_str(), d(s.full_backup_every).c_str(),
                  d(s.incremental_every).c_str());
      if (!s.pg_bin.empty()) std::printf("pg_bin = \"%s\"\n", s.pg_bin.c_str());
      if (!s.logical_slot.empty()) {
        std::printf("logical_slot = \"%s\"\nlogical_slot_failover = %s\npublication = \"%s\"\npublication_tables = [%s]\n",
                    s.logical_slot.c_str(), s.logical_slot_failover ? "true" : "false", s.publication.c_str(),
                    s.publication_tables.empty() ? "" : absl::StrCat("\"", absl::StrJoin(s.publication_tables, "\", \""), "\"").c_str());
      }
    } else {
      // The password itself is never printed.
      std::printf("address = \"%s\"\nuser = \"%s\"\npassword = %s\nsnapshot_every = \"%s\"\nrepl_timeout = \"%s\"\n",
                  s.address.c_str(), s.redis.user.c_str(), s.redis.password.empty() ? "(none)" : "(set)",
                  d(s.snapshot_every).c_str(), d(s.repl_timeout).c_str());
    }
  }
  return 0;
}

}  // namespace ferry::tools
