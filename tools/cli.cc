#include "tools/cli.h"

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "storage/archive_keys.h"
#include "tools/commands.h"
#include "tools/restore/wal_fetch.h"
#include "tools/service/config.h"

namespace ferry::tools {

int Fail(const std::string& command, const absl::Status& status) {
  std::fprintf(stderr, "ferry %s: %s\n", command.c_str(), std::string(status.message()).c_str());
  return absl::IsInvalidArgument(status) ? 2 : 1;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

namespace {

// The keys every command seals and opens archive data with (storage/archive_keys.h): a
// config's [archive] encryption_key_file (none if it has none: what `config check` shows is
// what runs), else the file FERRY_KEY_FILE names (commands run without a config, such as
// restore_command's wal-fetch). A config that does not load is left for the command to report.
absl::Status InstallKeys(const std::string& config_path) {
  if (!config_path.empty()) {
    auto config = LoadConfig(config_path);
    if (config.ok()) {
      storage::SetProcessKeys(config->keys);
      return absl::OkStatus();
    }
  }
  const char* file = std::getenv(storage::kKeyFileEnv);
  if (file == nullptr || *file == '\0') return absl::OkStatus();
  auto keys = storage::LoadKeyFile(file);
  if (!keys.ok()) return absl::InvalidArgumentError(absl::StrCat(storage::kKeyFileEnv, ": ", keys.status().message()));
  storage::SetProcessKeys(*std::move(keys));
  return absl::OkStatus();
}

// True when argv names `command` as ferry's subcommand (for errors before parsing ends).
bool IsSubcommand(int argc, char** argv, absl::string_view command) {
  return argc > 1 && command == argv[1];
}

std::string VersionText() {
  return absl::StrCat("ferry ", FERRY_VERSION, " (commit ", FERRY_GIT_COMMIT,
                      ")\nPostgreSQL 15 (physical WAL, pgoutput logical); Redis 7 (PSYNC, multi-part AOF)");
}

}  // namespace

int RunCli(int argc, char** argv) {
  CLI::App app{"ferry: continuous WAL and AOF streaming replicator"};
  app.require_subcommand(1);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ level=%l %v", spdlog::pattern_time_type::utc);

  std::string config, archive, source, name, dest, dir;
  bool json = false;
  bool keep = false;
  int seconds = 30;

  CLI::App* run = app.add_subcommand("run", "Run the replication service for one region");
  run->add_option("--config", config, "TOML config file")->required();
  run->footer("Example: ferry run --config /etc/ferry/ferry.toml");

  CLI::App* mirror = app.add_subcommand("mirror", "Standby region: keep an archive in step with a region's Kafka topics");
  mirror->add_option("--config", config, "TOML config file with [archive], [kafka] and [mirror]")->required();
  mirror->footer("Example: ferry mirror --config /etc/ferry/mirror.toml");

  int mock_brokers = 3;
  CLI::App* kafka_mock = app.add_subcommand("kafka-mock", "Run librdkafka's mock Kafka cluster; prints its bootstrap address");
  kafka_mock->add_option("--brokers", mock_brokers, "number of brokers")->check(CLI::Range(1, 16));
  kafka_mock->footer("In memory only, for development and tests. Example: ferry kafka-mock --brokers 3");

  CLI::App* fetch = app.add_subcommand(
      "wal-fetch", "Materialise a WAL file from the archive (PostgreSQL restore_command)");
  fetch->add_option("--archive", archive, "archive directory (or --config)");
  fetch->add_option("--config", config, "TOML config file: its [archive] path (and key)");
  fetch->add_option("--source", source, "source name")->required();
  WalFetchArgs wf;
  fetch->add_option("walfile", name, "requested file (%f)");
  fetch->add_option("dest", dest, "destination path (%p)");
  fetch->add_option("--prefetch", wf.prefetch.depth,
                    "segments to decompress ahead in the background (0: off)")
      ->default_val(wf.prefetch.depth)
      ->check(CLI::Range(0, 64));
  fetch->add_option("--spool", wf.prefetch.spool, "where segments wait (default: DEST's dir/.ferry-prefetch)");
  fetch->add_option("--drop-spool", wf.drop_spool, "remove this spool and exit (recovery_end_command)");
  fetch->footer(
      "Exit 0 when the file was written, 1 when it is not in the archive (past its end), 200 for\n"
      "anything else (damage, a gap, I/O, a bad argument): PostgreSQL stops recovery on 200 instead\n"
      "of ending it early and promoting with less than the archive holds.\n"
      "After serving a segment, a background process decompresses the next --prefetch complete\n"
      "segments into the spool, so that the next call is a rename and replay never waits.\n"
      "Example: restore_command = 'ferry wal-fetch --archive /var/lib/ferry/archive --source main %f %p'\n"
      "         recovery_end_command = 'ferry wal-fetch --archive /var/lib/ferry/archive --source main "
      "--drop-spool pg_wal/.ferry-prefetch'");

  std::string topic_prefix = "ferry";
  CLI::App* changes = app.add_subcommand("changes", "Print a source's archived change events as Debezium JSON lines");
  changes->add_option("--archive", archive, "archive directory (or --config)");
  changes->add_option("--config", config, "TOML config file: its [archive] path (and key)");
  changes->add_option("--source", source, "the PostgreSQL source (its logical_slot)")->required();
  changes->add_option("--topic-prefix", topic_prefix, "prefix for source.name, as [kafka] topic_prefix")
      ->default_val("ferry");
  changes->footer(
      "Complete transactions in commit order, the initial snapshot's reads first; the same envelopes\n"
      "the service publishes per table to Kafka. Example: ferry changes --archive /var/lib/ferry/archive --source main");

  CLI::App* verify = app.add_subcommand("verify", "Check every frame checksum and position continuity");
  verify->add_option("--archive", archive, "archive directory (or --config)");
  verify->add_option("--config", config, "TOML config file: its [archive] path (and key)");
  verify->add_option("--source", source, "only this source");
  verify->add_flag("--json", json, "machine-readable output with per-stream digests");
  verify->footer("Exit 1 naming file and offset of each damaged frame.\nExample: ferry verify --archive /var/lib/ferry/archive --json");

  CLI::App* ls = app.add_subcommand("ls", "List sources, streams and restorable windows");
  ls->add_option("--archive", archive, "archive directory (or --config)");
  ls->add_option("--config", config, "TOML config file: its [archive] path (and key)");
  ls->add_flag("--json", json, "machine-readable output");
  ls->footer("Example: ferry ls --archive /var/lib/ferry/archive");

  CLI::App* sandbox = app.add_subcommand(
      "sandbox", "Local PostgreSQL + ferry + pgbench load, then verify and a restore");
  sandbox->add_option("--dir", dir, "working directory (default: a new temp dir)");
  sandbox->add_option("--seconds", seconds, "seconds of pgbench load")->check(CLI::Range(1, 3600));
  sandbox->add_flag("--keep", keep, "keep the working directory and servers' files");
  sandbox->footer("Example: ferry sandbox --seconds 20");

  CLI::App* backup = app.add_subcommand("backup", "Take a base backup (PostgreSQL) or an RDB snapshot (Redis) now");
  backup->add_option("--config", config, "TOML config file")->required();
  backup->add_option("--source", source, "source name")->required();
  backup->add_flag("--json", json, "machine-readable output");
  int wal_wait = 60;
  backup->add_option("--wal-wait", wal_wait, "seconds to wait for the archive to hold the backup's end WAL")
      ->default_val(60)
      ->check(CLI::Range(1, 86400));
  backup->footer(
      "Runs BASE_BACKUP on a connection of its own while `ferry run` keeps streaming WAL; stores\n"
      "only chunks the archive does not have yet. The backup is kept only once the archive holds its\n"
      "WAL up to the backup's end (else exit 1). Example: ferry backup --config ferry.toml --source main");

  bool dry_run = false;
  CLI::App* retention = app.add_subcommand("retention", "Expire snapshots, WAL and chunks per [retention]");
  retention->add_option("--config", config, "TOML config file")->required();
  retention->add_flag("--dry-run", dry_run, "list what would be deleted, delete nothing");
  retention->footer(
      "Keeps the newest backup and everything the kept backups need to restore to any point up\n"
      "to the archive's end. Example: ferry retention --config ferry.toml --dry-run");

  CLI::App* restore = app.add_subcommand("restore", "Restore a source to a point in time");
  restore->require_subcommand(1);
  PgRestoreArgs pr;
  CLI::App* restore_pg = restore->add_subcommand("postgres", "Restore PostgreSQL into a new data directory");
  restore_pg->add_option("--archive", pr.archive, "archive directory (or --config)");
  restore_pg->add_option("--config", config, "TOML config file: its [archive] path (and key)");
  restore_pg->add_option("--source", pr.source, "source name")->required();
  restore_pg->add_option("--time", pr.time, "RFC 3339 time: stop before the first commit after it");
  restore_pg->add_option("--lsn", pr.lsn, "stop at this WAL position (X/Y)");
  restore_pg->add_option("--xid", pr.xid, "stop after this transaction's commit");
  restore_pg->add_flag("--latest", pr.latest, "replay every archived commit");
  restore_pg->add_flag("--standby", pr.standby,
                       "with --latest: a warm standby that keeps replaying what the archive receives until promoted");
  restore_pg->add_option("--to", pr.to, "new (or empty) data directory")->required();
  restore_pg->add_flag("--start", pr.start, "start the server and wait until recovery has finished");
  restore_pg->add_option("--port", pr.port, "port for --start (default: a free one)")->check(CLI::Range(1, 65535));
  restore_pg->add_option("--timeout", pr.timeout_seconds, "seconds to wait for recovery with --start")
      ->check(CLI::Range(1, 86400));
  restore_pg->footer(
      "Example: ferry restore postgres --archive /var/lib/ferry/archive --source main \\\n"
      "           --time 2026-11-24T10:00:00Z --to /var/lib/pg-restore --start");

  RedisRestoreArgs rr;
  CLI::App* restore_redis = restore->add_subcommand("redis", "Restore Redis into a new AOF directory");
  restore_redis->add_option("--archive", rr.archive, "archive directory (or --config)");
  restore_redis->add_option("--config", config, "TOML config file: its [archive] path (and key)");
  restore_redis->add_option("--source", rr.source, "source name")->required();
  restore_redis->add_option("--time", rr.time, "RFC 3339 time: every command ferry had archived then");
  restore_redis->add_option("--offset", rr.offset, "replication offset to stop at (on a command boundary)");
  restore_redis->add_flag("--latest", rr.latest, "every archived command");
  restore_redis->add_option("--to", rr.to, "new (or empty) directory; the AOF goes to DIR/appendonlydir")->required();
  restore_redis->add_flag("--start", rr.start, "start redis-server on it and wait until it has loaded");
  restore_redis->add_option("--port", rr.port, "port for --start (default: a free one)")->check(CLI::Range(1, 65535));
  restore_redis->footer(
      "Writes a Redis 7 multi-part AOF (base RDB + commands up to the target + manifest), ending\n"
      "on a transaction boundary. Load it with: redis-server --dir DIR --appendonly yes\n"
      "Example: ferry restore redis --archive /var/lib/ferry/archive --source cache \\\n"
      "           --time 2026-11-24T10:00:00Z --to /var/lib/redis-restore --start");

  AllRestoreArgs ra;
  CLI::App* restore_all = restore->add_subcommand("all", "Restore every source to one instant or a mark");
  restore_all->add_option("--archive", ra.archive, "archive directory (or --config)");
  restore_all->add_option("--config", config, "TOML config file: its [archive] path (and key)");
  restore_all->add_option("--time", ra.time, "RFC 3339 time on ferry's clock: what ferry had archived then");
  restore_all->add_option("--mark", ra.mark, "a mark taken with ferry mark: exactly there");
  restore_all->add_flag("--latest", ra.latest, "everything archived");
  restore_all->add_option("--to", ra.to, "new (or empty) directory; each source goes to DIR/<source>")->required();
  restore_all->add_flag("--start", ra.start, "start every server and wait until it has recovered or loaded");
  restore_all->add_option("--timeout", ra.timeout_seconds, "seconds to wait for PostgreSQL recovery with --start");
  restore_all->footer(
      "PostgreSQL goes to the WAL position ferry had synced at T (or the mark's restore point),\n"
      "Redis to the commands it had archived at T (or the mark's offset): one clock for both.\n"
      "Example: ferry restore all --archive /var/lib/ferry/archive --time 2026-11-24T10:00:00Z \\\n"
      "           --to /var/lib/restore --start");

  int mark_wait = 30;
  CLI::App* mark = app.add_subcommand("mark", "Record a named point where every source agrees");
  mark->add_option("--config", config, "TOML config file")->required();
  mark->add_option("name", name, "mark name (letters, digits, '_', '-')")->required();
  mark->add_option("--wait", mark_wait, "seconds to wait until the archive holds the mark")->default_val(30);
  mark->footer(
      "Pauses Redis writes for at most [marks] pause_redis (off by default), creates a PostgreSQL\n"
      "restore point and records each Redis offset, then saves the mark once it is archived.\n"
      "Example: ferry mark --config /etc/ferry/ferry.toml before-migration");

  std::string drill_target = "latest";
  CLI::App* drill = app.add_subcommand("drill", "Restore every source into scratch servers and check them");
  drill->add_option("--config", config, "TOML config file")->required();
  drill->add_option("--target", drill_target, "latest, random (inside each window) or an RFC 3339 time")
      ->default_val("latest");
  drill->add_flag("--json", json, "machine-readable report");
  drill->footer(
      "PostgreSQL: recovery reaches the target and accepts queries, pg_amcheck finds no corruption,\n"
      "every table's rows are counted. Redis: the AOF loads, keys are counted. Reports RTO (restore\n"
      "start to a server answering) and RPO (target vs point reached); exit 1 naming each failed check.\n"
      "Example: ferry drill --config /etc/ferry/ferry.toml --target random"); 

  CLI::App* status = app.add_subcommand("status", "The running service's live state (from its /status)");
  status->add_option("--config", config, "TOML config file of the service (its [http] listen)")->required();
  status->add_flag("--json", json, "the service's /status JSON as is");
  status->footer("Exit 1 when the service reports itself unhealthy.\nExample: ferry status --config /etc/ferry/ferry.toml");

  std::string config_file;
  CLI::App* config_cmd = app.add_subcommand("config", "Configuration tools");
  config_cmd->require_subcommand(1);
  CLI::App* config_check = config_cmd->add_subcommand("check", "Validate a config and print the effective values");
  config_check->add_option("file", config_file, "TOML config file");
  config_check->add_option("--config", config, "TOML config file (instead of FILE)");
  config_check->footer("Exit 2 naming the key when the config is wrong.\nExample: ferry config check /etc/ferry/ferry.toml");

  app.set_version_flag("--version", VersionText());
  CLI::App* version = app.add_subcommand("version", "Version, commit and supported server versions");
  std::vector<std::string> help_topic;
  CLI::App* help = app.add_subcommand("help", "Help for ferry or one command");
  help->add_option("command", help_topic, "a command, e.g. restore postgres")->expected(0, 2);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    // restore_command: a usage error must stop recovery, not read as "not in the archive".
    return fetch->parsed() || IsSubcommand(argc, argv, "wal-fetch") ? kWalFetchFatal : 2;
  }
  if (version->parsed()) {
    std::printf("%s\n", VersionText().c_str());
    return 0;
  }
  if (help->parsed()) {
    CLI::App* topic = &app;
    for (const std::string& word : help_topic) {
      CLI::App* sub = nullptr;
      try {
        sub = topic->get_subcommand(word);
      } catch (const CLI::OptionNotFound&) {
      }
      if (sub == nullptr) {
        std::fprintf(stderr, "ferry help: no command \"%s\"; ferry help lists them\n",
                     absl::StrJoin(help_topic, " ").c_str());
        return 2;
      }
      topic = sub;
    }
    // Through the formatter: App::help() would describe the parsed `help` subcommand instead.
    const std::string usage = absl::StrJoin({std::string("ferry"), absl::StrJoin(help_topic, " ")}, " ");
    std::printf("%s", topic->get_formatter()->make_help(topic, std::string(absl::StripTrailingAsciiWhitespace(usage)),
                                                        CLI::AppFormatMode::Normal).c_str());
    return 0;
  }
  const std::string command = app.get_subcommands().front()->get_name();
  if (absl::Status st = InstallKeys(config); !st.ok()) {
    return fetch->parsed() ? WalFetchFatal(st) : Fail(command, st);
  }
  // Readers take the archive from --archive, or from the [archive] path of --config.
  const std::pair<CLI::App*, std::string*> readers[] = {
      {fetch, &archive},       {changes, &archive},          {verify, &archive},         {ls, &archive},
      {restore_pg, &pr.archive}, {restore_redis, &rr.archive}, {restore_all, &ra.archive}};
  for (const auto& [reader, path] : readers) {
    if (!reader->parsed()) continue;
    absl::Status st;
    if (path->empty() && !config.empty()) {
      auto loaded = LoadConfig(config);
      if (loaded.ok()) *path = loaded->archive_path;
      st = loaded.status();
    } else if (path->empty()) {
      st = absl::InvalidArgumentError("give the archive: --archive DIR or --config FILE");
    }
    if (!st.ok()) return reader == fetch ? WalFetchFatal(st) : Fail(command, st);
  }
  if (run->parsed()) return CmdRun(config);
  if (mirror->parsed()) return CmdMirror(config);
  if (kafka_mock->parsed()) return CmdKafkaMock(mock_brokers);
  if (fetch->parsed()) {
    wf.archive = archive;
    wf.source = source;
    wf.name = name;
    wf.dest = dest;
    return CmdWalFetch(wf);
  }
  if (verify->parsed()) return CmdVerify(archive, source, json);
  if (changes->parsed()) return CmdChanges(archive, source, topic_prefix);
  if (ls->parsed()) return CmdLs(archive, json);
  if (sandbox->parsed()) return CmdSandbox(dir, seconds, keep);
  if (backup->parsed()) return CmdBackup(config, source, json, wal_wait);
  if (retention->parsed()) return CmdRetention(config, dry_run);
  if (restore_pg->parsed()) return CmdRestorePostgres(pr);
  if (restore_redis->parsed()) return CmdRestoreRedis(rr);
  if (restore_all->parsed()) return CmdRestoreAll(ra);
  if (mark->parsed()) return CmdMark(config, name, mark_wait);
  if (drill->parsed()) return CmdDrill(config, drill_target, json);
  if (status->parsed()) return CmdStatus(config, json);
  if (config_check->parsed()) {
    if (config_file.empty() == config.empty()) {
      return Fail("config check", absl::InvalidArgumentError("give the config file: FILE or --config FILE"));
    }
    return CmdConfigCheck(config_file.empty() ? config : config_file);
  }
  return 2;
}

}  // namespace ferry::tools
