// ferry restore postgres: point-in-time restore of a PostgreSQL source into a new data
// directory, optionally started and recovered.
#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "storage/archive.h"
#include "tools/commands.h"
#include "tools/progress_bar.h"
#include "tools/restore/pg_restore.h"
#include "tools/sandbox/local_postgres.h"
#include "tools/sandbox/pg_steps.h"

namespace ferry::tools {
namespace {

absl::StatusOr<PgTarget> ParseTarget(const PgRestoreArgs& a) {
  const int given = !a.time.empty() + !a.lsn.empty() + !a.xid.empty() + (a.latest ? 1 : 0);
  if (given != 1) {
    return absl::InvalidArgumentError("give exactly one of --time, --lsn, --xid, --latest");
  }
  PgTarget t;
  if (!a.time.empty()) {
    t.kind = PgTarget::Kind::kTime;
    auto time = pipeline::ParseRfc3339(a.time);
    if (!time.ok()) return absl::InvalidArgumentError(time.status().message());
    t.time = *time;
  } else if (!a.lsn.empty()) {
    t.kind = PgTarget::Kind::kLsn;
    auto lsn = pipeline::Lsn::Parse(a.lsn);
    if (!lsn.ok()) return absl::InvalidArgumentError(lsn.status().message());
    t.lsn = *lsn;
  } else if (!a.xid.empty()) {
    t.kind = PgTarget::Kind::kXid;
    if (!absl::SimpleAtoi(a.xid, &t.xid) || t.xid < 3) {
      return absl::InvalidArgumentError(absl::StrCat("--xid ", a.xid, ": not a transaction id"));
    }
  }
  return t;
}

// Waits until the restored server has left recovery; a server that exits (recovery failed)
// is reported with its log.
absl::Status WaitForPromotion(LocalPostgres& pg, int timeout_seconds) {
  for (int i = 0; i < timeout_seconds * 10; ++i) {
    auto r = pg.Query("select pg_is_in_recovery()");
    if (r.ok() && *r == "f") return absl::OkStatus();
    if (!r.ok() && absl::IsUnavailable(r.status())) {
      absl::Status ready = pg.WaitReady(5);  // quotes the log if the postmaster has exited
      if (!ready.ok()) return ready;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat("recovery in ", pg.data_dir(), " did not finish within ",
                                                  timeout_seconds, " s; see ", pg.log_path()));
}

}  // namespace

int CmdRestorePostgres(const PgRestoreArgs& args) {
  auto target = ParseTarget(args);
  if (!target.ok()) return Fail("restore postgres", target.status());
  auto archive = storage::Archive::Open(args.archive, storage::ArchiveOptions{});
  if (!archive.ok()) return Fail("restore postgres", archive.status());
  auto wal = (*archive)->Stream(args.source, pipeline::StreamKind::kPgWal);
  if (!wal.ok()) return Fail("restore postgres", wal.status());
  auto identity = (*archive)->GetIdentity(args.source);
  if (!identity.ok()) return Fail("restore postgres", identity.status());
  uint64_t segment_bytes = 0, system_id = 0;
  if (!absl::SimpleAtoi((*identity)["wal_segment_size"], &segment_bytes) ||
      !absl::SimpleAtoi((*identity)["system_id"], &system_id)) {
    return Fail("restore postgres", absl::DataLossError(absl::StrCat(
                                        "source \"", args.source, "\" has a damaged identity file")));
  }
  auto store = storage::SnapshotStore::Open((*archive)->SnapshotDir(args.source), false);
  if (!store.ok()) return Fail("restore postgres", store.status());
  // Everything is checked before the target directory is touched.
  absl::Status empty = CheckEmptyTarget(args.to);
  if (!empty.ok()) return Fail("restore postgres", empty);
  auto plan = PlanPgRestore(**wal, **store, *target, segment_bytes, system_id);
  if (!plan.ok()) return Fail("restore postgres", plan.status());
  {
    ProgressBar bar(absl::StrCat("restore ", plan->snapshot->id));
    absl::Status st = MaterialiseSnapshot(**store, *plan->snapshot, args.to,
                                          [&](uint64_t d, uint64_t t) { bar.Update(d, t); });
    if (!st.ok()) return Fail("restore postgres", st);
  }
  absl::Status st = WriteRecoverySettings(args.to, SelfExecutable(), args.archive, args.source,
                                          plan->target_setting);
  if (!st.ok()) return Fail("restore postgres", st);
  std::printf("restored backup %s (consistent at %s) into %s; recovery replays WAL to %s\n",
              plan->snapshot->id.c_str(), plan->snapshot->Get("end_lsn").c_str(), args.to.c_str(),
              plan->description.c_str());
  if (!args.start) {
    std::printf("start it with: pg_ctl -D %s start\n", args.to.c_str());
    return 0;
  }
  auto pg = LocalPostgres::StartExisting(args.to, args.port);
  if (!pg.ok()) return Fail("restore postgres", pg.status());
  st = WaitForPromotion(**pg, args.timeout_seconds);
  if (!st.ok()) return Fail("restore postgres", st);
  auto reached = (*pg)->Query(
      "select coalesce(pg_last_xact_replay_timestamp()::text, 'none'), pg_current_wal_lsn(), "
      "(select timeline_id from pg_control_checkpoint())");
  if (!reached.ok()) return Fail("restore postgres", reached.status());
  std::printf("recovered: last replayed commit at %s; now at %s on a new timeline; running on "
              "127.0.0.1:%d (log %s)\n",
              std::string(reached->substr(0, reached->find('|'))).c_str(),
              std::string(reached->substr(reached->find('|') + 1)).c_str(), (*pg)->port(),
              (*pg)->log_path().c_str());
  (*pg)->Detach();
  return 0;
}

}  // namespace ferry::tools
