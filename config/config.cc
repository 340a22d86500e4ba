// ParseConfig: the config's TOML, one function per table, into Config with its defaults;
// every error names the key (config/toml_reader.h reads the values).
#include "config/config.h"

#include <arpa/inet.h>
#include <libpq-fe.h>

#include <algorithm>
#include <string_view>
#include <cstdlib>
#include <set>

#include "absl/functional/function_ref.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "config/toml_reader.h"
#include "cross_region/kafka.h"
#include "pipeline/check.h"
#include "storage/archive.h"
#include "storage/archive_keys.h"
#include "storage/durable_file.h"

namespace ferry::config {
namespace {

// A libpq connection string (key=value or URI) that carries a password is refused: the config
// file is read by operators and tools, and passwords belong to PGPASSWORD, a passfile or a
// client certificate.
absl::Status CheckNoPassword(const std::string& conninfo) {
  // A bare database name ("mydb") is a conninfo too (libpq expands only strings with '=' or a
  // URI prefix), and holds no password.
  if (conninfo.find('=') == std::string::npos && !absl::StartsWith(conninfo, "postgres://") &&
      !absl::StartsWith(conninfo, "postgresql://")) {
    return absl::OkStatus();
  }
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    std::string msg = err != nullptr ? std::string(absl::StripTrailingAsciiWhitespace(err)) : "out of memory";
    PQfreemem(err);
    return absl::InvalidArgumentError(absl::StrCat("not a libpq connection string: ", msg));
  }
  bool has_password = false;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (std::string_view(o->keyword) == "password" && o->val != nullptr && *o->val != '\0') has_password = true;
  }
  PQconninfoFree(opts);
  if (has_password) {
    return absl::InvalidArgumentError(
        "holds a password; secrets do not belong in the config file: set PGPASSWORD in the service's "
        "environment, use a passfile (passfile=/path, mode 0600) or a client certificate (sslcert/sslkey)");
  }
  return absl::OkStatus();
}

// An address is loopback when it is "localhost", a numeric 127.0.0.0/8 address or ::1 (a name
// like "127.example.com" is not).
bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

// A slot name PostgreSQL accepts: lower-case letters, digits and '_'.
absl::Status CheckSlotNames(const TableReader& r, const SourceConfig& s) {
  for (const auto& [key, slot] : {std::pair<const char*, const std::string*>{"physical_slot", &s.physical_slot},
                                  {"logical_slot", &s.logical_slot}}) {
    for (char c : *slot) {
      if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_')) {
        return r.Error(key, absl::StrCat("\"", *slot,
                       "\" is not a valid slot name (lower-case letters, digits and '_'; "
                       "the default is ferry_<name> with '-' not allowed)"));
      }
    }
  }
  if (!s.logical_slot.empty() && s.logical_slot == s.physical_slot) {
    return r.Error("logical_slot", "must differ from physical_slot");
  }
  return absl::OkStatus();
}

// The keys of a [[source]] with kind = "postgres".
absl::Status ParsePostgresSource(TableReader& r, SourceConfig* s) {
  FERRY_RETURN_IF_ERROR(r.String("conninfo", &s->conninfo, true));
  if (absl::Status st = CheckNoPassword(s->conninfo); !st.ok()) return r.Error("conninfo", st.message());
  s->physical_slot = absl::StrCat("ferry_", s->name);
  s->application_name = absl::StrCat("ferry_", s->name);
  FERRY_RETURN_IF_ERROR(r.String("physical_slot", &s->physical_slot));
  FERRY_RETURN_IF_ERROR(r.String("application_name", &s->application_name));
  FERRY_RETURN_IF_ERROR(r.Bool("create_slot", &s->create_slot));
  FERRY_RETURN_IF_ERROR(r.String("pg_bin", &s->pg_bin));
  FERRY_RETURN_IF_ERROR(r.String("logical_slot", &s->logical_slot));
  FERRY_RETURN_IF_ERROR(r.Bool("logical_slot_failover", &s->logical_slot_failover));
  FERRY_RETURN_IF_ERROR(r.String("publication", &s->publication));
  FERRY_RETURN_IF_ERROR(r.StringList("publication_tables", &s->publication_tables));
  if (!s->logical_slot.empty() && s->publication.empty()) s->publication = absl::StrCat("ferry_", s->name);
  if (s->logical_slot_failover && s->logical_slot.empty()) {
    return r.Error("logical_slot_failover", "set logical_slot too: it is that slot's setting");
  }
  if (s->logical_slot.empty() && (!s->publication.empty() || !s->publication_tables.empty())) {
    return r.Error("publication", "set logical_slot too: change events stream from a logical slot");
  }
  FERRY_RETURN_IF_ERROR(r.Duration("full_backup_every", &s->full_backup_every));
  FERRY_RETURN_IF_ERROR(r.Duration("incremental_every", &s->incremental_every));
  FERRY_RETURN_IF_ERROR(r.Bool("scheduled_backups", &s->scheduled_backups));
  int64_t interval = s->status_interval_ms;
  FERRY_RETURN_IF_ERROR(r.Int("status_interval_ms", 100, 3600 * 1000, &interval));
  s->status_interval_ms = static_cast<int>(interval);
  return CheckSlotNames(r, *s);
}

// The Redis password: secrets never live in the config, so name the environment variable or the file.
absl::Status ReadRedisPassword(TableReader& r, SourceConfig* s) {
  std::string password_env, password_file;
  FERRY_RETURN_IF_ERROR(r.String("password_env", &password_env));
  FERRY_RETURN_IF_ERROR(r.String("password_file", &password_file));
  if (!password_env.empty()) {
    const char* v = std::getenv(password_env.c_str());
    if (v == nullptr) {
      return r.Error("password_env", absl::StrCat("environment variable ", password_env, " is not set"));
    }
    s->redis.password = v;
  } else if (!password_file.empty()) {
    auto v = storage::ReadSecretFile(password_file);
    if (!v.ok()) return r.Error("password_file", v.status().message());
    s->redis.password = std::string(absl::StripTrailingAsciiWhitespace(*v));
  }
  return absl::OkStatus();
}

// The keys of a [[source]] with kind = "redis".
absl::Status ParseRedisSource(TableReader& r, SourceConfig* s) {
  FERRY_RETURN_IF_ERROR(r.String("address", &s->address, true));
  FERRY_RETURN_IF_ERROR(r.Duration("snapshot_every", &s->snapshot_every));
  FERRY_RETURN_IF_ERROR(r.Duration("repl_timeout", &s->repl_timeout));
  if (s->repl_timeout < absl::Seconds(1) || s->repl_timeout > absl::Hours(24)) {
    return r.Error("repl_timeout", "must be between 1s and 24h");
  }
  FERRY_RETURN_IF_ERROR(r.Bool("scheduled_backups", &s->scheduled_backups));
  auto endpoint = client::redis::ParseRedisAddress(s->address);
  if (!endpoint.ok()) return r.Error("address", endpoint.status().message());
  s->redis = *endpoint;
  FERRY_RETURN_IF_ERROR(r.String("user", &s->redis.user));
  return ReadRedisPassword(r, s);
}

// The keys every [[source]] has: name, kind, ack, down_after and commit_delay.
absl::Status ParseSourceCommon(TableReader& r, SourceConfig* s) {
  FERRY_RETURN_IF_ERROR(r.String("name", &s->name, true));
  if (absl::Status st = storage::ValidateSourceName(s->name); !st.ok()) {
    return r.Error("name", st.message());
  }
  FERRY_RETURN_IF_ERROR(r.String("kind", &s->kind, true));
  std::string ack = "local";
  FERRY_RETURN_IF_ERROR(r.String("ack", &ack));
  FERRY_RETURN_IF_ERROR(r.Duration("down_after", &s->down_after));
  std::string commit_delay;
  FERRY_RETURN_IF_ERROR(r.String("commit_delay", &commit_delay));
  if (!commit_delay.empty() && commit_delay != "auto") {
    FERRY_RETURN_IF_ERROR(r.Duration("commit_delay", &s->commit_delay));
    if (s->commit_delay > absl::Seconds(1)) return r.Error("commit_delay", "must be \"auto\" or at most 1s");
    s->commit_delay_auto = false;
  }
  if (ack == "local") {
    s->ack = pipeline::AckPolicy::kLocal;
  } else if (ack == "local+kafka") {
    s->ack = pipeline::AckPolicy::kLocalAndKafka;
  } else {
    return r.Error("ack", absl::StrCat("expected \"local\" or \"local+kafka\", got \"", ack, "\""));
  }
  return absl::OkStatus();
}

absl::Status ParseSource(const toml::table& t, size_t index, absl::string_view origin,
                         SourceConfig* s) {
  TableReader r(t, absl::StrCat("source[", index, "]"), origin);
  FERRY_RETURN_IF_ERROR(ParseSourceCommon(r, s));
  if (s->kind == "postgres") {
    FERRY_RETURN_IF_ERROR(ParsePostgresSource(r, s));
  } else if (s->kind == "redis") {
    FERRY_RETURN_IF_ERROR(ParseRedisSource(r, s));
  } else {
    return r.Error("kind", absl::StrCat("expected \"postgres\" or \"redis\", got \"", s->kind, "\""));
  }
  return r.CheckUnknown();
}

// Reads the table [name] of `root` with `parse` when the config has it, then refuses the keys
// `parse` did not read.
absl::Status ParseTable(const toml::table& root, TableReader& top, absl::string_view name, absl::string_view origin,
                        absl::FunctionRef<absl::Status(TableReader&)> parse) {
  top.Skip(name);
  const toml::table* t = nullptr;
  FERRY_RETURN_IF_ERROR(SubTable(root, name, origin, &t));
  if (t == nullptr) return absl::OkStatus();
  TableReader r(*t, std::string(name), origin);
  FERRY_RETURN_IF_ERROR(parse(r));
  return r.CheckUnknown();
}

absl::Status ParseArchive(TableReader& r, Config& c) {
  FERRY_RETURN_IF_ERROR(r.String("path", &c.archive_path, true));
  std::string writer = std::string(storage::WriterKindName(c.writer));
  FERRY_RETURN_IF_ERROR(r.String("writer", &writer));
  auto kind = storage::ParseWriterKind(writer);
  if (!kind.ok()) return r.Error("writer", kind.status().message());
  c.writer = *kind;
  int64_t seg_mb = static_cast<int64_t>(c.segment_bytes >> 20);
  FERRY_RETURN_IF_ERROR(r.Int("segment_mb", 1, 4096, &seg_mb));
  c.segment_bytes = static_cast<uint64_t>(seg_mb) << 20;
  int64_t level = c.zstd_level;
  FERRY_RETURN_IF_ERROR(r.Int("zstd_level", 0, 19, &level));
  int64_t min_free = c.min_free_percent;
  FERRY_RETURN_IF_ERROR(r.Int("min_free_percent", 0, 99, &min_free));
  c.min_free_percent = static_cast<int>(min_free);
  int64_t verify_rate = c.verify_mb_per_s;
  FERRY_RETURN_IF_ERROR(r.Int("verify_mb_per_s", 0, 100000, &verify_rate));
  c.verify_mb_per_s = static_cast<int>(verify_rate);
  FERRY_RETURN_IF_ERROR(r.Duration("verify_sweep_every", &c.verify_sweep_every));
  c.zstd_level = static_cast<int>(level);
  FERRY_RETURN_IF_ERROR(r.String("encryption_key_file", &c.encryption_key_file));
  if (!c.encryption_key_file.empty()) {
    auto keys = storage::LoadKeyFile(c.encryption_key_file);
    if (!keys.ok()) return r.Error("encryption_key_file", keys.status().message());
    c.keys = *std::move(keys);
  }
  return absl::OkStatus();
}

absl::Status ParseRetention(TableReader& r, Config& c) {
  FERRY_RETURN_IF_ERROR(r.Duration("full", &c.retention_full));
  FERRY_RETURN_IF_ERROR(r.Duration("incremental", &c.retention_incremental));
  FERRY_RETURN_IF_ERROR(r.Duration("wal", &c.retention_wal));
  return r.Duration("redis_snapshots", &c.retention_redis_snapshots);
}

absl::Status ParseHttp(TableReader& r, Config& c) {
  FERRY_RETURN_IF_ERROR(r.String("listen", &c.http_listen));
  if (auto listen = ParseListen(c.http_listen); !c.http_listen.empty() && !listen.ok()) {
    return r.Error("listen", "expected host:port, e.g. \"127.0.0.1:9187\"");
  }
  std::string token_file;
  FERRY_RETURN_IF_ERROR(r.String("token_file", &token_file));
  if (!token_file.empty()) {
    auto token = storage::ReadSecretFile(token_file);
    if (!token.ok()) return r.Error("token_file", token.status().message());
    c.http_token = std::string(absl::StripAsciiWhitespace(*token));
    if (c.http_token.empty()) return r.Error("token_file", absl::StrCat(token_file, " is empty"));
  }
  // /status names servers, slots and positions: anywhere but loopback it needs the token.
  if (auto listen = ParseListen(c.http_listen); listen.ok() && !IsLoopbackHost(listen->host) && c.http_token.empty()) {
    return r.Error("listen", absl::StrCat("\"", c.http_listen,
                                          "\" is not a loopback address: set token_file too, so that every "
                                          "request must carry \"Authorization: Bearer <token>\""));
  }
  return absl::OkStatus();
}

// [kafka.properties]: passed to librdkafka as they are, except secrets.
absl::Status ParseKafkaProperties(const toml::table& kafka, TableReader& r, absl::string_view origin, Config& c) {
  r.Skip("properties");
  const toml::table* props = nullptr;
  FERRY_RETURN_IF_ERROR(SubTable(kafka, "properties", origin, &props));
  if (props == nullptr) return absl::OkStatus();
  for (const auto& [k, v] : *props) {
    auto value = v.value<std::string>();
    if (!value.has_value()) {
      return r.Error(absl::StrCat("properties.", std::string(k.str())), "expected a string (librdkafka property)");
    }
    if (absl::StrContains(std::string(k.str()), "password") || absl::StrContains(std::string(k.str()), "secret")) {
      return r.Error(absl::StrCat("properties.", std::string(k.str())),
                     "secrets do not belong in the config file; set it in the environment as "
                     "FERRY_KAFKA_<PROPERTY> (dots as underscores, upper case)");
    }
    c.kafka_properties[std::string(k.str())] = *value;
  }
  return absl::OkStatus();
}

absl::Status ParseKafka(TableReader& r, absl::string_view origin, Config& c) {
  FERRY_RETURN_IF_ERROR(r.String("brokers", &c.kafka_brokers, true));
  if (auto mock = cross_region::ParseMockBrokers(c.kafka_brokers); absl::IsInvalidArgument(mock.status())) {
    return r.Error("brokers", mock.status().message());
  }
  FERRY_RETURN_IF_ERROR(r.String("topic_prefix", &c.kafka_topic_prefix));
  FERRY_RETURN_IF_ERROR(r.Int("max_message_bytes", 1024, 64 << 20, &c.kafka_max_message_bytes));
  FERRY_RETURN_IF_ERROR(r.Bool("tombstones", &c.kafka_tombstones));
  return ParseKafkaProperties(r.table(), r, origin, c);
}

// What [kafka] leaves to the environment and to defaults.
void CompleteKafka(Config& c) {
  // Secret properties come from the environment: FERRY_KAFKA_SASL_PASSWORD -> sasl.password.
  for (const char* secret : {"sasl.password", "ssl.key.password", "ssl.keystore.password"}) {
    std::string env = absl::StrCat("FERRY_KAFKA_", absl::AsciiStrToUpper(secret));
    std::replace(env.begin(), env.end(), '.', '_');
    if (const char* v = std::getenv(env.c_str()); v != nullptr) c.kafka_properties[secret] = v;
  }
  if (c.kafka_topic_prefix.empty()) {
    c.kafka_topic_prefix = c.region.empty() ? "ferry" : absl::StrCat("ferry.", c.region);
  }
}

absl::Status ParseMirror(TableReader& r, Config& c) {
  FERRY_RETURN_IF_ERROR(r.StringList("sources", &c.mirror_sources));
  for (size_t i = 0; i < c.mirror_sources.size(); ++i) {
    if (absl::Status st = storage::ValidateSourceName(c.mirror_sources[i]); !st.ok()) {
      return r.Error(absl::StrCat("sources[", i, "]"), st.message());
    }
  }
  FERRY_RETURN_IF_ERROR(r.String("group_id", &c.mirror_group_id));
  if (c.mirror_group_id.empty()) {
    c.mirror_group_id = c.region.empty() ? "ferry-mirror" : absl::StrCat("ferry-mirror-", c.region);
  }
  FERRY_RETURN_IF_ERROR(r.String("apply_redis", &c.mirror_apply_redis));
  if (!c.mirror_apply_redis.empty() && !ParseListen(c.mirror_apply_redis).ok()) {
    return r.Error("apply_redis", "expected host:port of the standby Redis, e.g. \"127.0.0.1:6380\"");
  }
  FERRY_RETURN_IF_ERROR(r.String("apply_postgres", &c.mirror_apply_postgres));
  if (!c.mirror_apply_postgres.empty()) {
    if (absl::Status st = CheckNoPassword(c.mirror_apply_postgres); !st.ok()) return r.Error("apply_postgres", st.message());
  }
  return absl::OkStatus();
}

// [[source]] tables, with names unique.
absl::Status ParseSources(const toml::table& root, TableReader& top, absl::string_view origin, Config& c) {
  top.Skip("source");
  const toml::node* n = root.get("source");
  if (n == nullptr) return absl::OkStatus();
  const toml::array* arr = n->as_array();
  if (arr == nullptr) return top.Error("source", "expected [[source]] tables");
  std::set<std::string> names;
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table* st = arr->get(i)->as_table();
    if (st == nullptr) return top.Error("source", "expected [[source]] tables");
    SourceConfig s;
    FERRY_RETURN_IF_ERROR(ParseSource(*st, i, origin, &s));
    if (!names.insert(s.name).second) {
      return top.Error(absl::StrCat("source[", i, "].name"),
                       absl::StrCat("duplicate source name \"", s.name, "\""));
    }
    c.sources.push_back(std::move(s));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  int64_t n = 0;
  if (i == 0 || !absl::SimpleAtoi(text.substr(0, i), &n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad duration \"", text, "\": expected a number and a unit (ms, s, m, h, d)"));
  }
  absl::string_view unit = text.substr(i);
  if (unit == "ms") return absl::Milliseconds(n);
  if (unit == "s") return absl::Seconds(n);
  if (unit == "m") return absl::Minutes(n);
  if (unit == "h") return absl::Hours(n);
  // Duration arithmetic saturates (at infinity) where 24 * n would overflow (found by fuzz_config).
  if (unit == "d") return absl::Hours(n) * 24;
  return absl::InvalidArgumentError(
      absl::StrCat("bad duration \"", text, "\": unit must be ms, s, m, h or d"));
}

absl::StatusOr<Config> ParseConfig(absl::string_view text, absl::string_view origin) {
  FERRY_RETURN_IF_ERROR(CheckAsciiOutsideStrings(text, origin));
  toml::parse_result parsed = toml::parse(std::string_view(text.data(), text.size()));
  if (!parsed) {
    const auto& err = parsed.error();
    return absl::InvalidArgumentError(absl::StrCat(origin, ":", err.source().begin.line, ":",
                                                   err.source().begin.column, ": ",
                                                   std::string(err.description())));
  }
  const toml::table& root = parsed.table();
  Config c;
  TableReader top(root, "", origin);
  FERRY_RETURN_IF_ERROR(top.String("region", &c.region));
  FERRY_RETURN_IF_ERROR(top.Duration("drill_every", &c.drill_every));

  bool has_archive = false;
  FERRY_RETURN_IF_ERROR(ParseTable(root, top, "archive", origin, [&](TableReader& r) {
    has_archive = true;
    return ParseArchive(r, c);
  }));
  if (!has_archive) return top.Error("archive", "missing [archive] table with path = \"...\"");
  FERRY_RETURN_IF_ERROR(ParseTable(root, top, "retention", origin, [&](TableReader& r) { return ParseRetention(r, c); }));
  FERRY_RETURN_IF_ERROR(ParseTable(root, top, "marks", origin,
                                   [&](TableReader& r) { return r.Duration("pause_redis", &c.mark_pause_redis); }));
  FERRY_RETURN_IF_ERROR(ParseTable(root, top, "http", origin, [&](TableReader& r) { return ParseHttp(r, c); }));
  bool prefix_explicit = false;
  FERRY_RETURN_IF_ERROR(ParseTable(root, top, "kafka", origin, [&](TableReader& r) {
    FERRY_RETURN_IF_ERROR(ParseKafka(r, origin, c));
    prefix_explicit = !c.kafka_topic_prefix.empty();
    CompleteKafka(c);
    return absl::OkStatus();
  }));
  FERRY_RETURN_IF_ERROR(ParseTable(root, top, "mirror", origin, [&](TableReader& r) {
    if (c.kafka_brokers.empty() || !prefix_explicit) {
      return top.Error("mirror", "needs [kafka] with brokers and topic_prefix: the primary region's prefix");
    }
    return ParseMirror(r, c);
  }));
  FERRY_RETURN_IF_ERROR(ParseSources(root, top, origin, c));
  FERRY_RETURN_IF_ERROR(top.CheckUnknown());
  return c;
}

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  auto text = storage::ReadWholeFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("read config ", path, ": ", text.status().message()));
  }
  return ParseConfig(*text, path);
}

absl::StatusOr<ListenAddress> ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  ListenAddress a;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &a.port) || a.port < 0 ||
      a.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http.listen \"", listen, "\": expected host:port"));
  }
  a.host = listen.substr(0, colon);
  return a;
}

}  // namespace ferry::config
