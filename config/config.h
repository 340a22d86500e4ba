// The service configuration (TOML, docs/design.md "Configuration"): loading, defaults, validation.
// Unknown keys and bad values are errors that name the key.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/redis/replica_conn.h"
#include "pipeline/cipher.h"
#include "pipeline/progress.h"
#include "storage/durable_file.h"

namespace ferry::config {

struct SourceConfig {
  std::string name;
  std::string kind;  // "postgres" or "redis"
  // postgres
  std::string conninfo;
  std::string physical_slot;     // default "ferry_<name>"
  std::string application_name;  // default "ferry_<name>"
  bool create_slot = true;
  // The server binaries restores and drills of this source run (`--pg-bin`); empty: found
  // by the backup's major (local::PgServerBinDir).
  std::string pg_bin;
  // Change events (the pg-changes stream) come from this logical slot when it is set; the
  // publication (default "ferry_<name>") is created if missing, for publication_tables or, when
  // that is empty, for all tables.
  std::string logical_slot;
  // PostgreSQL 17+: the logical slot is created with FAILOVER, so that a physical standby
  // syncing slots (sync_replication_slots) has it after a promotion.
  bool logical_slot_failover = false;
  std::string publication;
  std::vector<std::string> publication_tables;
  absl::Duration full_backup_every = absl::Hours(24);
  absl::Duration incremental_every = absl::Hours(1);
  bool scheduled_backups = true;  // false: backups (Redis: snapshot_every) only on demand
  int status_interval_ms = 10000;
  // redis
  std::string address;
  // Parsed from address; user and password (from password_env or password_file, never
  // from the config itself) for AUTH.
  client::redis::RedisEndpoint redis;
  absl::Duration snapshot_every = absl::Hours(6);
  // A replication stream silent this long is dead (ingest::redis::RedisSourceOptions).
  absl::Duration repl_timeout = absl::Seconds(60);
  // both
  pipeline::AckPolicy ack = pipeline::AckPolicy::kLocal;
  // /healthz reports the source down when it has not streamed for this long.
  absl::Duration down_after = absl::Seconds(5);
  // The batcher's commit_delay (pipeline/batcher.h): group commits of this source's streams
  // at least this far apart under load, and the source reading its socket in bursts as far
  // apart (pipeline/read_pacer.h); 0: every batch written at once. "auto" (the default): see
  // AutoCommitDelay in service.h.
  absl::Duration commit_delay = absl::ZeroDuration();
  bool commit_delay_auto = true;
};

struct Config {
  std::string region;
  std::string archive_path;
  // posix: each group commit's pwrite and fdatasync on the committing thread. io_uring sends
  // a buffered write and every fdatasync to an io-wq worker, a thread hop per commit: as a
  // synchronous standby it measured 1.2x posix's CPU (docs/benchmarks.md), for no gain.
  storage::WriterKind writer = storage::WriterKind::kPosix;
  uint64_t segment_bytes = 64ull << 20;
  int zstd_level = 1;
  // [archive] encryption_key_file and the keys it holds: every frame and snapshot chunk is
  // sealed with AES-256-GCM under the newest (pipeline/cipher.h). Empty/null: no encryption.
  std::string encryption_key_file;
  std::shared_ptr<const pipeline::Keyring> keys;
  // Under this much free space on the archive's file system the service stops writing and
  // acknowledging (it never deletes anything to make room) and resumes when space returns.
  int min_free_percent = 5;
  // The service re-reads what it archived at up to this many MiB a second (0: never):
  // new frames soon after they are synced, then the whole archive again and again.
  int verify_mb_per_s = 8;
  absl::Duration verify_sweep_every = absl::Hours(1);  // a pass over the whole archive this often
  absl::Duration retention_full = absl::Hours(24 * 30);
  absl::Duration retention_incremental = absl::Hours(24 * 7);
  absl::Duration retention_wal = absl::Hours(72);
  absl::Duration retention_redis_snapshots = absl::Hours(24 * 7);
  // ferry mark: how long Redis writes may be paused (CLIENT PAUSE WRITE) while the mark is
  // taken; 0 (the default) takes it without pausing, at the cost of exactness for Redis.
  absl::Duration mark_pause_redis = absl::ZeroDuration();
  std::string http_listen;  // empty: no HTTP endpoint
  std::string http_token;   // from [http] token_file: requests must carry "Authorization: Bearer <it>"
  // `ferry run` restores every source in a scratch directory this often (ferry drill);
  // zero turns the schedule off.
  absl::Duration drill_every = absl::Hours(24 * 7);
  // [kafka]: brokers "host:port,..." or "mock:N" (librdkafka's mock cluster, in-process);
  // empty: no Kafka. topic_prefix defaults to "ferry.<region>" ("ferry" without a region).
  std::string kafka_brokers;
  std::string kafka_topic_prefix;
  std::map<std::string, std::string> kafka_properties;  // [kafka.properties], for librdkafka as is
  int64_t kafka_max_message_bytes = 900 * 1024;
  bool kafka_tombstones = true;  // a Debezium tombstone (null value) follows each delete event
  // [mirror] (ferry mirror): the primary region's sources to mirror, the consumer group (one
  // per standby region), and a standby Redis kept in sync from the mirrored stream.
  std::vector<std::string> mirror_sources;
  std::string mirror_group_id;
  std::string mirror_apply_redis;  // "host:port", empty: none
  // A PostgreSQL database (libpq conninfo) the mirrored change events are applied to; empty: none.
  std::string mirror_apply_postgres;
  std::vector<SourceConfig> sources;
};

// Parses TOML text; `origin` (a file name) prefixes every error:
// "ferry.toml: source[0].ack: expected \"local\" or \"local+kafka\", got \"both\"".
absl::StatusOr<Config> ParseConfig(absl::string_view text, absl::string_view origin);
absl::StatusOr<Config> LoadConfig(const std::string& path);

// "30d", "72h", "15m", "10s", "500ms".
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text);

// "host:port" of [http] listen; kInvalidArgument naming the text otherwise.
struct ListenAddress {
  std::string host;
  int port = 0;
};
absl::StatusOr<ListenAddress> ParseListen(const std::string& listen);

}  // namespace ferry::config
