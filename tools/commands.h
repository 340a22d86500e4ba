// One function per subcommand (each in tools/cmd_<name>.cc). Each returns the process exit
// code: 0 ok, 1 failure, 2 usage; errors are printed as one line on stderr.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "pipeline/change_event.h"
#include "restore/wal_prefetch.h"

namespace ferry::tools {

int CmdRun(const std::string& config_path);
int CmdMirror(const std::string& config_path);
int CmdKafkaMock(int brokers);
struct WalFetchArgs {
  std::string archive, source, name, dest;
  restore::WalPrefetchOptions prefetch;
  std::string drop_spool;  // set: remove this spool instead of fetching
};
int CmdWalFetch(const WalFetchArgs& args);
// Prints `status` as wal-fetch's one line in PostgreSQL's log and returns kWalFetchFatal.
int WalFetchFatal(const absl::Status& status);
int CmdVerify(const std::string& archive, const std::string& source, bool json);
int CmdLs(const std::string& archive, bool json);
int CmdChanges(const std::string& archive, const std::string& source, const std::string& topic_prefix);
// Calls fn with each complete transaction of a source's pg-changes stream, in commit order.
absl::Status ForEachArchivedTransaction(const std::string& archive, const std::string& source,
                                        const std::function<void(const pipeline::ChangeBatch&)>& fn);
int CmdBackup(const std::string& config_path, const std::string& source, bool json, int wal_wait_seconds);

struct PgRestoreArgs {
  std::string archive, source, to;
  std::string time, lsn, xid;  // at most one set (or latest)
  bool latest = false;
  bool standby = false;  // with --latest: a warm standby that follows the archive
  bool start = false;
  int port = 0;
  int timeout_seconds = 3600;
  std::string pg_bin;  // the server binaries; empty: found by the backup's major
};
int CmdRestorePostgres(const PgRestoreArgs& args);
struct RedisRestoreArgs {
  std::string archive, source, to;
  std::string time, offset;  // at most one set (or latest)
  bool latest = false;
  bool start = false;
  int port = 0;
};
int CmdRestoreRedis(const RedisRestoreArgs& args);
struct AllRestoreArgs {
  std::string archive, to;
  std::string time, mark;  // at most one set (or latest)
  bool latest = false;
  bool start = false;
  int timeout_seconds = 3600;
  std::string pg_bin;
};
int CmdRestoreAll(const AllRestoreArgs& args);
int CmdMark(const std::string& config_path, const std::string& name, int wait_seconds);
// pg_bin, when set, replaces every PostgreSQL source's pg_bin.
int CmdDrill(const std::string& config_path, const std::string& target, bool json, const std::string& pg_bin);
int CmdStatus(const std::string& config_path, bool json);
int CmdConfigCheck(const std::string& config_path);
int CmdRetention(const std::string& config_path, bool dry_run);
// pg_bin: run the sandbox's PostgreSQL from there (its major); empty: Debian's 15.
int CmdSandbox(const std::string& dir, int seconds, bool keep, const std::string& pg_bin);

// Prints "ferry <command>: <message>" and returns the exit code for the status
// (kInvalidArgument: 2, anything else: 1).
int Fail(const std::string& command, const absl::Status& status);

// JSON string escaping for the --json outputs.
std::string JsonString(const std::string& s);

}  // namespace ferry::tools
