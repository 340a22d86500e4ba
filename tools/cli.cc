// RunCli: the CLI11 wiring of every subcommand (tools/commands.h), one function per subcommand
// or group, and the steps every command shares (archive keys, the archive path from --config).
#include "tools/cli.h"

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/pg/server_version.h"
#include "config/config.h"
#include "pipeline/check.h"
#include "restore/wal_fetch.h"
#include "storage/archive_keys.h"
#include "tools/commands.h"

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

constexpr char kPgBinHelp[] =
    "the bin directory of the PostgreSQL server to run (default: found by the backup's major: "
    "/usr/lib/postgresql/N/bin, then the install step's cache)";

// The keys every command seals and opens archive data with (storage/archive_keys.h): a
// config's [archive] encryption_key_file (none if it has none: what `config check` shows is
// what runs), else the file FERRY_KEY_FILE names (commands run without a config, such as
// restore_command's wal-fetch). A config that does not load is left for the command to report.
absl::Status InstallKeys(const std::string& config_path) {
  if (!config_path.empty()) {
    auto config = config::LoadConfig(config_path);
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

// Readers take the archive from --archive, or from the [archive] path of --config.
absl::Status FillArchivePath(const std::string& config_path, std::string* archive) {
  if (!archive->empty()) return absl::OkStatus();
  if (config_path.empty()) return absl::InvalidArgumentError("give the archive: --archive DIR or --config FILE");
  FERRY_ASSIGN_OR_RETURN(config::Config config, config::LoadConfig(config_path));
  *archive = config.archive_path;
  return absl::OkStatus();
}

// True when argv names `command` as ferry's subcommand (for errors before parsing ends).
bool IsSubcommand(int argc, char** argv, absl::string_view command) {
  return argc > 1 && command == argv[1];
}

std::string VersionText() {
  return absl::StrCat("ferry ", FERRY_VERSION, " (commit ", FERRY_GIT_COMMIT,
                      ")\nPostgreSQL ", client::pg::kOldestMajor, " to ", client::pg::kNewestMajor,
                      " (block-level incremental backups from 17); "
                      "Redis 7 (PSYNC, multi-part AOF)");
}

// A subcommand that runs (a leaf of the command tree) and what runs it once parsing is done.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
  std::string* archive = nullptr;  // readers: filled from --config when --archive is not given
};

// What CLI11 parses the options into, and the subcommands that run. Only one subcommand runs,
// so subcommands share the options they have in common (--config, --source, --json, ...).
struct Cli {
  std::string config, archive, source, name;
  bool json = false;
  int mock_brokers = 3;
  WalFetchArgs wal_fetch;
  std::string topic_prefix = "ferry";
  std::string sandbox_dir;
  int sandbox_seconds = 30;
  bool sandbox_keep = false;
  int wal_wait = 60;
  bool dry_run = false;
  PgRestoreArgs restore_pg;
  RedisRestoreArgs restore_redis;
  AllRestoreArgs restore_all;
  int mark_wait = 30;
  std::string drill_target = "latest";
  std::string pg_bin;
  std::string config_file;
  std::vector<std::string> help_topic;

  CLI::App* wal_fetch_app = nullptr;  // its errors exit kWalFetchFatal: they must stop recovery
  CLI::App* version_app = nullptr;
  CLI::App* help_app = nullptr;
  std::vector<Command> commands;
};

void AddServiceCommands(CLI::App& app, Cli& cli) {
  CLI::App* run = app.add_subcommand("run", "Run the replication service for one region");
  run->add_option("--config", cli.config, "TOML config file")->required();
  run->footer("Example: ferry run --config /etc/ferry/ferry.toml");
  cli.commands.push_back({run, [&cli] { return CmdRun(cli.config); }});

  CLI::App* mirror = app.add_subcommand("mirror", "Standby region: keep an archive in step with a region's Kafka topics");
  mirror->add_option("--config", cli.config, "TOML config file with [archive], [kafka] and [mirror]")->required();
  mirror->footer("Example: ferry mirror --config /etc/ferry/mirror.toml");
  cli.commands.push_back({mirror, [&cli] { return CmdMirror(cli.config); }});

  CLI::App* kafka_mock = app.add_subcommand("kafka-mock", "Run librdkafka's mock Kafka cluster; prints its bootstrap address");
  kafka_mock->add_option("--brokers", cli.mock_brokers, "number of brokers")->check(CLI::Range(1, 16));
  kafka_mock->footer("In memory only, for development and tests. Example: ferry kafka-mock --brokers 3");
  cli.commands.push_back({kafka_mock, [&cli] { return CmdKafkaMock(cli.mock_brokers); }});
}

void AddWalFetch(CLI::App& app, Cli& cli) {
  WalFetchArgs& wf = cli.wal_fetch;
  CLI::App* fetch = app.add_subcommand(
      "wal-fetch", "Materialise a WAL file from the archive (PostgreSQL restore_command)");
  fetch->add_option("--archive", wf.archive, "archive directory (or --config)");
  fetch->add_option("--config", cli.config, "TOML config file: its [archive] path (and key)");
  fetch->add_option("--source", wf.source, "source name")->required();
  fetch->add_option("walfile", wf.name, "requested file (%f)");
  fetch->add_option("dest", wf.dest, "destination path (%p)");
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
  cli.wal_fetch_app = fetch;
  cli.commands.push_back({fetch, [&cli] { return CmdWalFetch(cli.wal_fetch); }, &wf.archive});
}

// changes, verify and ls: commands that read an archive.
void AddReaderCommands(CLI::App& app, Cli& cli) {
  CLI::App* changes = app.add_subcommand("changes", "Print a source's archived change events as Debezium JSON lines");
  changes->add_option("--archive", cli.archive, "archive directory (or --config)");
  changes->add_option("--config", cli.config, "TOML config file: its [archive] path (and key)");
  changes->add_option("--source", cli.source, "the PostgreSQL source (its logical_slot)")->required();
  changes->add_option("--topic-prefix", cli.topic_prefix, "prefix for source.name, as [kafka] topic_prefix")
      ->default_val("ferry");
  changes->footer(
      "Complete transactions in commit order, the initial snapshot's reads first; the same envelopes\n"
      "the service publishes per table to Kafka. Example: ferry changes --archive /var/lib/ferry/archive --source main");
  cli.commands.push_back(
      {changes, [&cli] { return CmdChanges(cli.archive, cli.source, cli.topic_prefix); }, &cli.archive});

  CLI::App* verify = app.add_subcommand("verify", "Check every frame checksum and position continuity");
  verify->add_option("--archive", cli.archive, "archive directory (or --config)");
  verify->add_option("--config", cli.config, "TOML config file: its [archive] path (and key)");
  verify->add_option("--source", cli.source, "only this source");
  verify->add_flag("--json", cli.json, "machine-readable output with per-stream digests");
  verify->footer("Exit 1 naming file and offset of each damaged frame.\nExample: ferry verify --archive /var/lib/ferry/archive --json");
  cli.commands.push_back({verify, [&cli] { return CmdVerify(cli.archive, cli.source, cli.json); }, &cli.archive});

  CLI::App* ls = app.add_subcommand("ls", "List sources, streams and restorable windows");
  ls->add_option("--archive", cli.archive, "archive directory (or --config)");
  ls->add_option("--config", cli.config, "TOML config file: its [archive] path (and key)");
  ls->add_flag("--json", cli.json, "machine-readable output");
  ls->footer("Example: ferry ls --archive /var/lib/ferry/archive");
  cli.commands.push_back({ls, [&cli] { return CmdLs(cli.archive, cli.json); }, &cli.archive});
}

void AddSandbox(CLI::App& app, Cli& cli) {
  CLI::App* sandbox = app.add_subcommand(
      "sandbox", "Local PostgreSQL + ferry + pgbench load, then verify and a restore");
  sandbox->add_option("--dir", cli.sandbox_dir, "working directory (default: a new temp dir)");
  sandbox->add_option("--seconds", cli.sandbox_seconds, "seconds of pgbench load")->check(CLI::Range(1, 3600));
  sandbox->add_flag("--keep", cli.sandbox_keep, "keep the working directory and servers' files");
  sandbox->add_option("--pg-bin", cli.pg_bin, "run this PostgreSQL's server binaries (any major from 14 to 18)");
  sandbox->footer("Example: ferry sandbox --seconds 20");
  cli.commands.push_back(
      {sandbox, [&cli] { return CmdSandbox(cli.sandbox_dir, cli.sandbox_seconds, cli.sandbox_keep, cli.pg_bin); }});
}

// backup and retention: what the archive keeps.
void AddBackupCommands(CLI::App& app, Cli& cli) {
  CLI::App* backup = app.add_subcommand("backup", "Take a base backup (PostgreSQL) or an RDB snapshot (Redis) now");
  backup->add_option("--config", cli.config, "TOML config file")->required();
  backup->add_option("--source", cli.source, "source name")->required();
  backup->add_flag("--json", cli.json, "machine-readable output");
  backup->add_option("--wal-wait", cli.wal_wait, "seconds to wait for the archive to hold the backup's end WAL")
      ->default_val(60)
      ->check(CLI::Range(1, 86400));
  backup->footer(
      "Runs BASE_BACKUP on a connection of its own while `ferry run` keeps streaming WAL; stores\n"
      "only chunks the archive does not have yet. The backup is kept only once the archive holds its\n"
      "WAL up to the backup's end (else exit 1). Example: ferry backup --config ferry.toml --source main");
  cli.commands.push_back({backup, [&cli] { return CmdBackup(cli.config, cli.source, cli.json, cli.wal_wait); }});

  CLI::App* retention = app.add_subcommand("retention", "Expire snapshots, WAL and chunks per [retention]");
  retention->add_option("--config", cli.config, "TOML config file")->required();
  retention->add_flag("--dry-run", cli.dry_run, "list what would be deleted, delete nothing");
  retention->footer(
      "Keeps the newest backup and everything the kept backups need to restore to any point up\n"
      "to the archive's end. Example: ferry retention --config ferry.toml --dry-run");
  cli.commands.push_back({retention, [&cli] { return CmdRetention(cli.config, cli.dry_run); }});
}

void AddRestorePostgres(CLI::App& restore, Cli& cli) {
  PgRestoreArgs& pr = cli.restore_pg;
  CLI::App* restore_pg = restore.add_subcommand("postgres", "Restore PostgreSQL into a new data directory");
  restore_pg->add_option("--archive", pr.archive, "archive directory (or --config)");
  restore_pg->add_option("--config", cli.config, "TOML config file: its [archive] path (and key)");
  restore_pg->add_option("--source", pr.source, "source name")->required();
  restore_pg->add_option("--time", pr.time, "RFC 3339 time: stop before the first commit after it");
  restore_pg->add_option("--lsn", pr.lsn, "stop at this WAL position (X/Y)");
  restore_pg->add_option("--xid", pr.xid, "stop after this transaction's commit");
  restore_pg->add_flag("--latest", pr.latest, "replay every archived commit");
  restore_pg->add_flag("--standby", pr.standby,
                       "with --latest: a warm standby that keeps replaying what the archive receives until promoted");
  restore_pg->add_option("--to", pr.to, "new (or empty) data directory")->required();
  restore_pg->add_flag("--start", pr.start, "start the server and wait until recovery has finished");
  restore_pg->add_option("--pg-bin", pr.pg_bin, kPgBinHelp);
  restore_pg->add_option("--port", pr.port, "port for --start (default: a free one)")->check(CLI::Range(1, 65535));
  restore_pg->add_option("--timeout", pr.timeout_seconds, "seconds to wait for recovery with --start")
      ->check(CLI::Range(1, 86400));
  restore_pg->footer(
      "Example: ferry restore postgres --archive /var/lib/ferry/archive --source main \\\n"
      "           --time 2026-11-24T10:00:00Z --to /var/lib/pg-restore --start");
  cli.commands.push_back({restore_pg, [&cli] { return CmdRestorePostgres(cli.restore_pg); }, &pr.archive});
}

void AddRestoreRedis(CLI::App& restore, Cli& cli) {
  RedisRestoreArgs& rr = cli.restore_redis;
  CLI::App* restore_redis = restore.add_subcommand("redis", "Restore Redis into a new AOF directory");
  restore_redis->add_option("--archive", rr.archive, "archive directory (or --config)");
  restore_redis->add_option("--config", cli.config, "TOML config file: its [archive] path (and key)");
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
  cli.commands.push_back({restore_redis, [&cli] { return CmdRestoreRedis(cli.restore_redis); }, &rr.archive});
}

void AddRestoreAll(CLI::App& restore, Cli& cli) {
  AllRestoreArgs& ra = cli.restore_all;
  CLI::App* restore_all = restore.add_subcommand("all", "Restore every source to one instant or a mark");
  restore_all->add_option("--archive", ra.archive, "archive directory (or --config)");
  restore_all->add_option("--config", cli.config, "TOML config file: its [archive] path (and key)");
  restore_all->add_option("--time", ra.time, "RFC 3339 time on ferry's clock: what ferry had archived then");
  restore_all->add_option("--mark", ra.mark, "a mark taken with ferry mark: exactly there");
  restore_all->add_flag("--latest", ra.latest, "everything archived");
  restore_all->add_option("--to", ra.to, "new (or empty) directory; each source goes to DIR/<source>")->required();
  restore_all->add_flag("--start", ra.start, "start every server and wait until it has recovered or loaded");
  restore_all->add_option("--pg-bin", ra.pg_bin, kPgBinHelp);
  restore_all->add_option("--timeout", ra.timeout_seconds, "seconds to wait for PostgreSQL recovery with --start");
  restore_all->footer(
      "PostgreSQL goes to the WAL position ferry had synced at T (or the mark's restore point),\n"
      "Redis to the commands it had archived at T (or the mark's offset): one clock for both.\n"
      "Example: ferry restore all --archive /var/lib/ferry/archive --time 2026-11-24T10:00:00Z \\\n"
      "           --to /var/lib/restore --start");
  cli.commands.push_back({restore_all, [&cli] { return CmdRestoreAll(cli.restore_all); }, &ra.archive});
}

void AddRestoreCommands(CLI::App& app, Cli& cli) {
  CLI::App* restore = app.add_subcommand("restore", "Restore a source to a point in time");
  restore->require_subcommand(1);
  AddRestorePostgres(*restore, cli);
  AddRestoreRedis(*restore, cli);
  AddRestoreAll(*restore, cli);
}

// mark and drill: commands that work across every source of a config.
void AddMarkAndDrill(CLI::App& app, Cli& cli) {
  CLI::App* mark = app.add_subcommand("mark", "Record a named point where every source agrees");
  mark->add_option("--config", cli.config, "TOML config file")->required();
  mark->add_option("name", cli.name, "mark name (letters, digits, '_', '-')")->required();
  mark->add_option("--wait", cli.mark_wait, "seconds to wait until the archive holds the mark")->default_val(30);
  mark->footer(
      "Pauses Redis writes for at most [marks] pause_redis (off by default), creates a PostgreSQL\n"
      "restore point and records each Redis offset, then saves the mark once it is archived.\n"
      "Example: ferry mark --config /etc/ferry/ferry.toml before-migration");
  cli.commands.push_back({mark, [&cli] { return CmdMark(cli.config, cli.name, cli.mark_wait); }});

  CLI::App* drill = app.add_subcommand("drill", "Restore every source into scratch servers and check them");
  drill->add_option("--config", cli.config, "TOML config file")->required();
  drill->add_option("--target", cli.drill_target, "latest, random (inside each window) or an RFC 3339 time")
      ->default_val("latest");
  drill->add_flag("--json", cli.json, "machine-readable report");
  drill->add_option("--pg-bin", cli.pg_bin, kPgBinHelp);
  drill->footer(
      "PostgreSQL: recovery reaches the target and accepts queries, pg_amcheck finds no corruption,\n"
      "every table's rows are counted. Redis: the AOF loads, keys are counted. Reports RTO (restore\n"
      "start to a server answering) and RPO (target vs point reached); exit 1 naming each failed check.\n"
      "Example: ferry drill --config /etc/ferry/ferry.toml --target random");
  cli.commands.push_back({drill, [&cli] { return CmdDrill(cli.config, cli.drill_target, cli.json, cli.pg_bin); }});
}

// status and config check: commands about a service and its config.
void AddStatusAndConfig(CLI::App& app, Cli& cli) {
  CLI::App* status = app.add_subcommand("status", "The running service's live state (from its /status)");
  status->add_option("--config", cli.config, "TOML config file of the service (its [http] listen)")->required();
  status->add_flag("--json", cli.json, "the service's /status JSON as is");
  status->footer("Exit 1 when the service reports itself unhealthy.\nExample: ferry status --config /etc/ferry/ferry.toml");
  cli.commands.push_back({status, [&cli] { return CmdStatus(cli.config, cli.json); }});

  CLI::App* config_cmd = app.add_subcommand("config", "Configuration tools");
  config_cmd->require_subcommand(1);
  CLI::App* config_check = config_cmd->add_subcommand("check", "Validate a config and print the effective values");
  config_check->add_option("file", cli.config_file, "TOML config file");
  config_check->add_option("--config", cli.config, "TOML config file (instead of FILE)");
  config_check->footer("Exit 2 naming the key when the config is wrong.\nExample: ferry config check /etc/ferry/ferry.toml");
  cli.commands.push_back({config_check, [&cli] {
                            if (cli.config_file.empty() == cli.config.empty()) {
                              return Fail("config check",
                                          absl::InvalidArgumentError("give the config file: FILE or --config FILE"));
                            }
                            return CmdConfigCheck(cli.config_file.empty() ? cli.config : cli.config_file);
                          }});
}

void AddVersionAndHelp(CLI::App& app, Cli& cli) {
  app.set_version_flag("--version", VersionText());
  cli.version_app = app.add_subcommand("version", "Version, commit and supported server versions");
  cli.help_app = app.add_subcommand("help", "Help for ferry or one command");
  cli.help_app->add_option("command", cli.help_topic, "a command, e.g. restore postgres")->expected(0, 2);
}

// `ferry help [COMMAND [SUBCOMMAND]]`: prints that command's help; exit 2 when there is no such command.
int PrintHelp(CLI::App& app, const std::vector<std::string>& help_topic) {
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

// Runs the parsed subcommand: installs the archive keys and fills a reader's archive path first.
int RunParsed(const CLI::App& app, Cli& cli) {
  const std::string name = app.get_subcommands().front()->get_name();
  auto fail = [&](const absl::Status& status) {
    return cli.wal_fetch_app->parsed() ? WalFetchFatal(status) : Fail(name, status);
  };
  if (absl::Status st = InstallKeys(cli.config); !st.ok()) return fail(st);
  for (const Command& command : cli.commands) {
    if (!command.app->parsed()) continue;
    if (command.archive != nullptr) {
      if (absl::Status st = FillArchivePath(cli.config, command.archive); !st.ok()) return fail(st);
    }
    return command.run();
  }
  return 2;
}

}  // namespace

int RunCli(int argc, char** argv) {
  CLI::App app{"ferry: continuous WAL and AOF streaming replicator"};
  app.require_subcommand(1);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ level=%l %v", spdlog::pattern_time_type::utc);

  Cli cli;
  AddServiceCommands(app, cli);
  AddWalFetch(app, cli);
  AddReaderCommands(app, cli);
  AddSandbox(app, cli);
  AddBackupCommands(app, cli);
  AddRestoreCommands(app, cli);
  AddMarkAndDrill(app, cli);
  AddStatusAndConfig(app, cli);
  AddVersionAndHelp(app, cli);

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
    return cli.wal_fetch_app->parsed() || IsSubcommand(argc, argv, "wal-fetch") ? restore::kWalFetchFatal : 2;
  }
  if (cli.version_app->parsed()) {
    std::printf("%s\n", VersionText().c_str());
    return 0;
  }
  if (cli.help_app->parsed()) return PrintHelp(app, cli.help_topic);
  return RunParsed(app, cli);
}

}  // namespace ferry::tools
