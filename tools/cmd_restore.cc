// ferry restore postgres: point-in-time restore of a PostgreSQL source into a new data
// directory, optionally started and recovered.
#include <unistd.h>

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "local/local_postgres.h"
#include "local/process.h"
#include "restore/pg_restore.h"
#include "restore/restore_all.h"
#include "tools/commands.h"

namespace ferry::tools {
namespace {

absl::StatusOr<restore::PgTarget> ParseTarget(const PgRestoreArgs& a) {
  const int given = !a.time.empty() + !a.lsn.empty() + !a.xid.empty() + (a.latest ? 1 : 0);
  if (given != 1) {
    return absl::InvalidArgumentError("give exactly one of --time, --lsn, --xid, --latest");
  }
  restore::PgTarget t;
  t.standby = a.standby;
  if (!a.time.empty()) {
    t.kind = restore::PgTarget::Kind::kTime;
    auto time = pipeline::ParseRfc3339(a.time);
    if (!time.ok()) return absl::InvalidArgumentError(time.status().message());
    t.time = *time;
  } else if (!a.lsn.empty()) {
    t.kind = restore::PgTarget::Kind::kLsn;
    auto lsn = pipeline::Lsn::Parse(a.lsn);
    if (!lsn.ok()) return absl::InvalidArgumentError(lsn.status().message());
    t.lsn = *lsn;
  } else if (!a.xid.empty()) {
    t.kind = restore::PgTarget::Kind::kXid;
    if (!absl::SimpleAtoi(a.xid, &t.xid) || t.xid < 3) {
      return absl::InvalidArgumentError(absl::StrCat("--xid ", a.xid, ": not a transaction id"));
    }
  }
  return t;
}

}  // namespace

int CmdRestorePostgres(const PgRestoreArgs& args) {
  auto target = ParseTarget(args);
  if (!target.ok()) return Fail("restore postgres", target.status());
  if (!args.pg_bin.empty()) {
    // A --pg-bin without a server is named before anything is written.
    if (auto major = local::ServerBinMajor(args.pg_bin); !major.ok()) return Fail("restore postgres", major.status());
  }
  auto summary = restore::RestorePostgresTo(args.archive, args.source, *target, args.to, local::SelfExecutable());
  if (!summary.ok()) return Fail("restore postgres", summary.status());
  std::printf("%s\n", summary->summary.c_str());
  // The server binaries of the backup's major (or --pg-bin, if it is that major).
  const absl::StatusOr<int> major = local::DataDirMajor(args.to);
  if (!major.ok()) return Fail("restore postgres", major.status());
  const absl::StatusOr<std::string> bin = local::PgServerBinDir(*major, args.pg_bin);
  if (!bin.ok()) return Fail("restore postgres", bin.status());
  const std::string pg_ctl = *bin + "/pg_ctl";
  if (!args.start) {
    // PostgreSQL runs as its own user: as root, hand it the directory and say how to start it
    // as that user, with the full path of the server's pg_ctl (not on Debian's PATH).
    if (absl::Status st = local::GiveToServerUser(args.to); !st.ok()) return Fail("restore postgres", st);
    const std::string as_server = geteuid() == 0 ? "runuser -u postgres -- " : "";
    std::printf("start it with: %s%s -D %s -l %s/restore.log start\n", as_server.c_str(), pg_ctl.c_str(),
                args.to.c_str(), args.to.c_str());
    if (args.standby) {
      std::printf("promote it with: %s%s -D %s promote\n", as_server.c_str(), pg_ctl.c_str(), args.to.c_str());
    }
    return 0;
  }
  if (args.standby) {
    // A standby never ends recovery: started, it is ready once it accepts (read-only) queries.
    auto standby = local::LocalPostgres::StartExisting(args.to, args.port, *bin);
    if (!standby.ok()) return Fail("restore postgres", standby.status());
    std::printf("standby running on 127.0.0.1:%d (log %s), replaying from %s; promote it with: %s -D %s promote\n",
                (*standby)->port(), (*standby)->log_path().c_str(), args.archive.c_str(), pg_ctl.c_str(),
                args.to.c_str());
    (*standby)->Detach();
    return 0;
  }
  auto started = restore::StartRestoredPostgres(args.to, args.port, args.timeout_seconds, summary->must_reach, *bin);
  if (!started.ok()) return Fail("restore postgres", started.status());
  std::printf("recovered: %s; running on 127.0.0.1:%d (log %s)\n", started->reached.c_str(),
              started->server->port(), started->server->log_path().c_str());
  started->server->Detach();
  return 0;
}

}  // namespace ferry::tools
