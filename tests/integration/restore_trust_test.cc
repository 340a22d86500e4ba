// Nothing is reported restored that was not restored. Against a real PostgreSQL 15: a byte
// flipped anywhere in the WAL a restore needs makes `restore` refuse (never exit 0 with less
// than the target), naming the frame and a point that does restore; WAL damaged after the
// copy makes PostgreSQL itself stop recovery (wal-fetch's fatal exit), never promote early;
// every other wal-fetch failure stops recovery too, and only "past the end" reads as the end.
// A backup whose end WAL never reached the archive (ferry run killed) is not kept, and
// --latest still restores. verify and ls name damage once, ls --json stays JSON.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/pg/replication_conn.h"
#include "client/pg/server_version.h"
#include "local/local_postgres.h"
#include "local/process.h"
#include "restore/restore_all.h"
#include "restore/wal_fetch.h"
#include "storage/archive.h"
#include "storage/archive_keys.h"
#include "storage/segment_format.h"
#include "storage/snapshot_store.h"
#include "tests/fixtures/pg_cluster.h"
#include "tests/fixtures/scratch.h"

namespace ferry::testing {
namespace {

// The archive's WAL frames and the index of the one holding the newest backup's start.
struct WalFrames {
  std::vector<storage::FrameLocation> frames;
  std::string dir;  // the stream's directory
  size_t first_needed = 0;  // the frame holding the newest backup's start
  size_t oldest_start = 0;  // ... and the oldest backup's
  uint64_t segment_bytes = 0;
};

WalFrames ReadFrames(const std::string& archive_path) {
  WalFrames w;
  auto archive = storage::Archive::Open(archive_path, storage::ArchiveOptions{});
  EXPECT_TRUE(archive.ok()) << archive.status();
  if (!archive.ok()) return w;
  auto wal = (*archive)->Stream("main", pipeline::StreamKind::kPgWal);
  EXPECT_TRUE(wal.ok()) << wal.status();
  if (!wal.ok()) return w;
  w.frames = (*wal)->frames();
  w.dir = (*wal)->dir();
  auto seg = restore::WalSegmentBytes(**archive, "main");
  w.segment_bytes = seg.value_or(16 << 20);
  auto store = storage::SnapshotStore::Open((*archive)->SnapshotDir("main"), false);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok() || (*store)->snapshots().empty()) return w;
  auto frame_of = [&](const storage::SnapshotManifest& m) {
    auto start = pipeline::Lsn::Parse(m.Get("start_lsn"));
    EXPECT_TRUE(start.ok());
    size_t at = 0;
    for (size_t i = 0; i < w.frames.size(); ++i) {
      if (w.frames[i].header.start_pos <= start->value() && start->value() < w.frames[i].header.end_pos) at = i;
    }
    return at;
  };
  w.first_needed = frame_of((*store)->snapshots().back());
  w.oldest_start = frame_of((*store)->snapshots().front());
  return w;
}

std::string SegPath(const WalFrames& w, const storage::FrameLocation& f) {
  return w.dir + "/" + storage::SegmentFileName(f.segment_seq);
}

// `command` with `from` (--archive DIR or --config FILE) inserted after the command words.
std::vector<std::string> Args(const std::vector<std::string>& from, std::vector<std::string> command) {
  const size_t words = command.size() > 1 && command[0] == "restore" ? 2 : 1;
  command.insert(command.begin() + static_cast<std::ptrdiff_t>(words), from.begin(), from.end());
  return command;
}

local::CommandResult Ferry(const std::vector<std::string>& args) {
  auto r = RunFerry(args);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.value_or(local::CommandResult{});
}

// Restarts the cluster's ferry with [archive] encryption_key_file: what it archives from then
// on is sealed. The key file is the postgres user's (restored servers' wal-fetch reads it).
void Encrypt(Cluster& c) {
  ASSERT_TRUE(c.ferry->Terminate().ok());
  const std::string keys = c.dir + "/archive.keys";
  std::ofstream(keys) << "1 " << std::string(64, '7') << "\n";
  ASSERT_EQ(chmod(keys.c_str(), 0600), 0);
  ASSERT_TRUE(local::GiveToServerUser(keys).ok());
  std::ifstream in(c.config);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = text.find("[archive]\n");
  ASSERT_NE(at, std::string::npos) << text;
  text.insert(at + 10, absl::StrCat("encryption_key_file = \"", keys, "\"\n"));
  std::ofstream(c.config) << text;
  ASSERT_TRUE(c.ferry->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return FerryFlush(*c.pg).valid(); }, 30)) << c.ferry->Log();
}

// A primary with a backup and WAL after it in several archive segments, ferry stopped so the
// archive holds still; returns the primary's table checksums at the end.
std::string Prepare(Cluster& c) {
  Pgbench(*c.pg, {"-i", "-s", "4", "-q"});
  Q(*c.pg, "checkpoint");
  auto backup = RunFerry({"backup", "--config", c.config, "--source", "main"});
  EXPECT_TRUE(backup.ok() && backup->exit_code == 0) << (backup.ok() ? backup->err : "");
  // Poorly compressible WAL after the backup: at least three 8 MiB archive segments.
  Pgbench(*c.pg, {"-c", "2", "-t", "1500", "-N"});
  Q(*c.pg, "create table filler as select g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) as v "
           "from generate_series(1, 300000) g");
  Pgbench(*c.pg, {"-c", "2", "-t", "300", "-N"});
  const std::string sums = TableChecksums(*c.pg);
  WaitUntilArchived(*c.pg);
  EXPECT_TRUE(c.ferry->Terminate().ok());
  return sums;
}

struct FlipCase {
  const char* writer;
  bool encrypted;
  int major;  // the server's (its WAL format is what is flipped and decoded)
};

class FlipTest : public ::testing::TestWithParam<FlipCase> {};

TEST_P(FlipTest, AFlippedByteNeverRestoresLessAndRecoveryNeverEndsEarly) {
  Cluster c = StartCluster(GetParam().writer, {}, GetParam().major);
  ASSERT_NE(c.pg, nullptr);
  if (GetParam().encrypted) Encrypt(c);
  // Readers find the archive (and, encrypted, its key) through the config.
  const std::vector<std::string> from = {"--config", c.config};
  const std::string sums = Prepare(c);
  const WalFrames w = ReadFrames(c.archive);
  ASSERT_GT(w.frames.size(), w.first_needed + 10);
  const std::string restore_dir = c.dir + "/r";

  // An intact archive: --latest recovers to its last record (PostgreSQL is given that
  // record as its target) and has every commit the primary had.
  {
    auto r = RunFerrySucceeding(Args(from, {"restore", "postgres", "--source", "main", "--latest",
                                            "--to", c.dir + "/intact"}), "intact restore");
    ASSERT_TRUE(r);
    EXPECT_NE(r->out.find("the last archived record"), std::string::npos) << r->out;
    std::ifstream conf(c.dir + "/intact/postgresql.auto.conf");
    const std::string text((std::istreambuf_iterator<char>(conf)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("recovery_target_lsn = '"), std::string::npos) << text;
    auto pg = restore::StartRestoredPostgres(c.dir + "/intact", 0, 300);
    ASSERT_TRUE(pg.ok()) << pg.status();
    EXPECT_EQ(TableChecksums(*pg->server), sums);
    ASSERT_TRUE(pg->server->Stop().ok());
  }

  // Many flips, anywhere in the frames the restore needs (headers, payloads, any segment):
  // restore refuses, one line, and --to is left as it was (absent).
  std::mt19937_64 rng(20261207);
  for (int seed = 0; seed < 24; ++seed) {
    const size_t i = w.first_needed + rng() % (w.frames.size() - w.first_needed);
    const storage::FrameLocation& f = w.frames[i];
    const uint64_t at = f.offset + rng() % f.header.frame_size();
    const uint8_t mask = static_cast<uint8_t>(1u << (rng() % 8));
    FlipByte(SegPath(w, f), at, mask);
    auto r = Ferry(Args(from, {"restore", "postgres", "--source", "main", "--latest", "--to", restore_dir}));
    FlipByte(SegPath(w, f), at, mask);
    EXPECT_NE(r.exit_code, 0) << "seed " << seed << ": frame " << i << " byte " << at << " restored: " << r.out;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(std::filesystem::exists(restore_dir)) << "seed " << seed;
  }

  // A flipped payload byte in the middle: the refusal names the frame and a point that does
  // restore, and restoring to it works.
  const size_t mid = w.first_needed + (w.frames.size() - w.first_needed) * 3 / 4;
  const storage::FrameLocation& victim = w.frames[mid];
  const uint64_t at = victim.offset + victim.header.frame_size() - 3;
  FlipByte(SegPath(w, victim), at, 0x10);
  auto refused = Ferry(Args(from, {"restore", "postgres", "--source", "main", "--latest", "--to", restore_dir}));
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_NE(refused.err.find(SegPath(w, victim)), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find(absl::StrCat("offset ", victim.offset)), std::string::npos) << refused.err;
  const size_t xid_at = refused.err.find("--xid ");
  ASSERT_NE(xid_at, std::string::npos) << refused.err;
  const std::string xid = refused.err.substr(xid_at + 6, refused.err.find(' ', xid_at + 6) - xid_at - 6);
  {
    auto r = RunFerrySucceeding(Args(from, {"restore", "postgres", "--source", "main", "--xid", xid,
                                            "--to", c.dir + "/hint", "--start"}), "restore to the named point");
    ASSERT_TRUE(r);
    EXPECT_NE(r->out.find("recovered:"), std::string::npos) << r->out;
    int port = 0;
    const size_t p = r->out.find("127.0.0.1:");
    ASSERT_NE(p, std::string::npos);
    ASSERT_TRUE(absl::SimpleAtoi(r->out.substr(p + 10, r->out.find(' ', p) - p - 10), &port));
    auto started = local::LocalPostgres::Adopt(c.dir + "/hint", port);  // stopped as it goes
    EXPECT_TRUE(started.ok()) << started.status();
  }

  // wal-fetch on the damaged segment: the fatal status, one line naming file and offset.
  const uint64_t seg_no = victim.header.start_pos / w.segment_bytes;
  const std::string damaged_name =
      client::pg::WalFileName(pipeline::TimelineId(victim.header.epoch), seg_no, w.segment_bytes);
  auto fetch = Ferry(Args(from, {"wal-fetch", "--source", "main", "--prefetch", "0", damaged_name, c.dir + "/fetched"}));
  EXPECT_EQ(fetch.exit_code, restore::kWalFetchFatal) << fetch.err;
  EXPECT_NE(fetch.err.find(absl::StrCat("offset ", victim.offset)), std::string::npos) << fetch.err;
  EXPECT_EQ(std::count(fetch.err.begin(), fetch.err.end(), '\n'), 1) << fetch.err;

  // Damage after the copy, as if it happened while recovery ran: PostgreSQL stops recovery
  // (FATAL on wal-fetch's status) instead of promoting with what it had.
  FlipByte(SegPath(w, victim), at, 0x10);  // intact again, to restore
  ASSERT_TRUE(RunFerrySucceeding(Args(from, {"restore", "postgres", "--source", "main", "--latest",
                                             "--to", c.dir + "/late"}), "restore before damage"));
  FlipByte(SegPath(w, victim), at, 0x10);
  auto late = restore::StartRestoredPostgres(c.dir + "/late", 0, 120);
  EXPECT_FALSE(late.ok()) << "recovery promoted over damaged WAL: " << (late.ok() ? late->reached : "");
  if (late.ok()) (void)late->server->Stop();
  FlipByte(SegPath(w, victim), at, 0x10);

  // Every other wal-fetch failure stops recovery; only "past the end" reads as the end.
  const std::string first_name = client::pg::WalFileName(
      pipeline::TimelineId(w.frames[w.first_needed].header.epoch),
      w.frames[w.first_needed].header.start_pos / w.segment_bytes, w.segment_bytes);
  struct Case {
    std::vector<std::string> args;
    int exit_code;
  };
  for (const Case& k : std::vector<Case>{
           {{"--source", "nosuch", first_name, c.dir + "/f1"}, restore::kWalFetchFatal},
           {{"--source", "main", first_name, c.dir + "/missing-dir/f2"}, restore::kWalFetchFatal},
           {{"--source", "main", first_name}, restore::kWalFetchFatal},
           {{"--source", "main", "--bogus-flag", first_name, c.dir + "/f3"}, restore::kWalFetchFatal},
           {{"--source", "main", "0000000100000FFF000000FF", c.dir + "/f4"}, restore::kWalFetchNotInArchive},
           {{"--source", "main", "00000009.history", c.dir + "/f5"}, restore::kWalFetchNotInArchive},
           {{"--source", "main", first_name, c.dir + "/f6"}, 0}}) {
    std::vector<std::string> args = Args(from, {"wal-fetch", "--prefetch", "0"});
    args.insert(args.end(), k.args.begin(), k.args.end());
    auto r = Ferry(args);
    EXPECT_EQ(r.exit_code, k.exit_code) << absl::StrJoin(k.args, " ") << ": " << r.err;
  }
  auto bad_archive = Ferry({"wal-fetch", "--archive", c.dir + "/no-archive", "--source", "main", first_name, c.dir + "/f7"});
  EXPECT_EQ(bad_archive.exit_code, restore::kWalFetchFatal) << bad_archive.err;

  // A segment the postgres user cannot read: restore (as root) names it before writing
  // anything, and wal-fetch as that user stops recovery rather than end it.
  {
    const std::string seg = SegPath(w, w.frames[w.first_needed]);
    ASSERT_EQ(chmod(seg.c_str(), 0600), 0);
    auto refused_access = Ferry(Args(from, {"restore", "postgres", "--source", "main", "--latest", "--to", restore_dir}));
    EXPECT_EQ(refused_access.exit_code, 1) << refused_access.out;
    EXPECT_NE(refused_access.err.find("cannot read " + seg), std::string::npos) << refused_access.err;
    EXPECT_FALSE(std::filesystem::exists(restore_dir));
    local::RunOptions as_server;
    as_server.as_user = "postgres";
    if (GetParam().encrypted) {
      as_server.env = {absl::StrCat(storage::kKeyFileEnv, "=", c.dir, "/archive.keys")};
    }
    const std::string spool = local::MakeTempDir("ferry-fetch").value_or("/tmp");
    ASSERT_TRUE(local::GiveToServerUser(spool).ok());
    auto denied = local::RunCommand({FERRY_BINARY, "wal-fetch", "--archive", c.archive, "--source", "main",
                                     "--prefetch", "0", first_name, spool + "/f8"}, as_server);
    ASSERT_TRUE(denied.ok()) << denied.status();
    EXPECT_EQ(denied->exit_code, restore::kWalFetchFatal) << denied->err;
    EXPECT_NE(denied->err.find("Permission denied"), std::string::npos) << denied->err;
    ASSERT_EQ(chmod(seg.c_str(), 0640), 0);
  }

  // A sealed segment in the middle truncated: verify names the file once per spot and never
  // tells the user to run what they ran; ls --json still prints JSON; wal-fetch and restore
  // refuse rather than serve less.
  std::vector<std::string> segs;
  for (const auto& e : std::filesystem::directory_iterator(w.dir)) {
    if (e.path().extension() == ".seg") segs.push_back(e.path().string());
  }
  std::sort(segs.begin(), segs.end());
  ASSERT_GE(segs.size(), 3u);
  const std::string middle = segs[segs.size() - 2];
  ASSERT_EQ(truncate(middle.c_str(), static_cast<off_t>(std::filesystem::file_size(middle) / 2)), 0);
  auto verify = Ferry(Args(from, {"verify"}));
  EXPECT_EQ(verify.exit_code, 1) << verify.out;
  EXPECT_NE(verify.err.find(middle), std::string::npos) << verify.err;
  EXPECT_EQ(verify.err.find("run ferry verify"), std::string::npos) << verify.err;
  for (const auto line : absl::StrSplit(verify.err, '\n', absl::SkipEmpty())) {
    const std::string l(line);
    EXPECT_EQ(l.find(middle), l.rfind(middle)) << "the file is named once: " << l;
  }
  auto ls = Ferry(Args(from, {"ls", "--json"}));
  ASSERT_FALSE(ls.out.empty()) << ls.err;
  EXPECT_EQ(ls.out.front(), '{') << ls.out;
  EXPECT_NE(ls.out.find("\"sources\":[{"), std::string::npos) << ls.out;
  auto gap = Ferry(Args(from, {"restore", "postgres", "--source", "main", "--latest", "--to", restore_dir}));
  EXPECT_EQ(gap.exit_code, 1) << gap.out;
  EXPECT_FALSE(std::filesystem::exists(restore_dir));

  // The last segment truncated inside frames its index recorded as durable: data loss, named.
  const std::string last = segs.back();
  ASSERT_EQ(truncate(last.c_str(), static_cast<off_t>(std::filesystem::file_size(last) - 100)), 0);
  auto verify_last = Ferry(Args(from, {"verify", "--json"}));
  EXPECT_EQ(verify_last.exit_code, 1) << verify_last.out;
  EXPECT_NE(verify_last.out.find("acknowledged data was lost"), std::string::npos) << verify_last.out;
}

INSTANTIATE_TEST_SUITE_P(WritersAndKeys, FlipTest,
                         ::testing::Values(FlipCase{"io_uring", false, 15}, FlipCase{"posix", true, 15},
                                           FlipCase{"io_uring", false, client::pg::kNewestMajor}),
                         [](const ::testing::TestParamInfo<FlipCase>& info) {
                           return absl::StrCat(info.param.writer == std::string("io_uring") ? "IoUring" : "Posix",
                                               info.param.encrypted ? "Encrypted" : "Clear", "PostgreSQL",
                                               info.param.major);
                         });

// A drill fails on damage anywhere in the restorable window. kill -9 of ferry run while a
// backup runs: the backup's end never reaches the archive, so it is not kept (exit 1 naming
// both positions), and --latest restores from the backup before.
TEST(RestoreTrustTest, BackupIsKeptOnlyWithItsEndWalAndLatestStillRestores) {
  Cluster c = StartCluster("posix");
  ASSERT_NE(c.pg, nullptr);
  Pgbench(*c.pg, {"-i", "-s", "10", "-q"});
  ASSERT_TRUE(RunFerrySucceeding({"backup", "--config", c.config, "--source", "main"}, "first backup"));
  Pgbench(*c.pg, {"-c", "2", "-t", "200", "-N"});
  WaitUntilArchived(*c.pg);
  const std::string sums = TableChecksums(*c.pg);

  // A drill checks the whole restorable window, not only what its own restore needs: a
  // flipped frame before the newest backup fails it, naming the check and the file. The
  // backup runs under umask 077, the drill and the mark under 022: what each writes into the
  // archive gets the archive's modes all the same (checked at the end).
  const mode_t old_umask = umask(077);
  ASSERT_TRUE(RunFerrySucceeding({"backup", "--config", c.config, "--source", "main"}, "second backup"));
  umask(022);
  ASSERT_TRUE(RunFerrySucceeding({"mark", "--config", c.config, "before-drill"}, "mark"));
  {
    const WalFrames w = ReadFrames(c.archive);
    ASSERT_GT(w.first_needed, w.oldest_start + 2);
    const storage::FrameLocation& f = w.frames[(w.oldest_start + w.first_needed) / 2];
    const uint64_t at = f.offset + f.header.frame_size() - 2;
    FlipByte(SegPath(w, f), at, 0x04);
    auto drill = Ferry({"drill", "--config", c.config, "--json"});
    FlipByte(SegPath(w, f), at, 0x04);
    EXPECT_EQ(drill.exit_code, 1) << drill.out << drill.err;
    EXPECT_NE(drill.out.find("\"window\""), std::string::npos) << drill.out;
    EXPECT_NE(drill.out.find(SegPath(w, f)), std::string::npos) << drill.out;
  }
  umask(old_umask);

  // The backup runs on its own connection; ferry run dies while it copies.
  local::CommandResult second;
  std::thread backup([&] { second = Ferry({"backup", "--config", c.config, "--source", "main", "--wal-wait", "3"}); });
  usleep(300000);
  ASSERT_TRUE(c.ferry->Kill9().ok());
  backup.join();
  EXPECT_EQ(second.exit_code, 1) << second.out;
  EXPECT_NE(second.err.find("the backup is not kept"), std::string::npos) << second.err;
  auto ls = Ferry({"ls", "--archive", c.archive, "--json"});
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  const size_t snaps = ls.out.find("\"snapshots\":[");
  ASSERT_NE(snaps, std::string::npos) << ls.out;
  size_t backups = 0;
  for (size_t at = ls.out.find("\"pg-base-backup\""); at != std::string::npos;
       at = ls.out.find("\"pg-base-backup\"", at + 1)) {
    ++backups;
  }
  EXPECT_EQ(backups, 2u) << "the backup during the kill is not kept: " << ls.out;
  // A backup committed with an end the archive never got (an archive written before backups
  // waited for their end, or a mirror behind its region) does not block --latest either: it
  // restores from the newest usable backup and says so.
  std::string newer_id;
  {
    auto a = storage::Archive::Open(c.archive, storage::ArchiveOptions{});
    ASSERT_TRUE(a.ok()) << a.status();
    auto store = storage::SnapshotStore::Open((*a)->SnapshotDir("main"), /*writable=*/true);
    ASSERT_TRUE(store.ok()) << store.status();
    const std::string start = (*store)->snapshots().back().Get("start_lsn");
    auto w = (*store)->Begin(time(nullptr) + 3600, {{"kind", "pg-base-backup"}, {"class", "full"}, {"start_lsn", start},
                                                    {"start_tli", "1"}, {"end_lsn", "FF/0"}, {"end_tli", "1"}});
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->BeginFile("PG_VERSION", 0600, 1).ok());
    ASSERT_TRUE((*w)->Write("15\n").ok());
    ASSERT_TRUE((*w)->EndFile().ok());
    auto m = (*w)->Commit();
    ASSERT_TRUE(m.ok()) << m.status();
    newer_id = m->id;
  }
  auto r = RunFerrySucceeding({"restore", "postgres", "--archive", c.archive, "--source", "main", "--latest",
                               "--to", c.dir + "/latest"}, "latest after the failed backup");
  ASSERT_TRUE(r);
  EXPECT_NE(r->out.find(absl::StrCat("newer backup ", newer_id, " skipped")), std::string::npos) << r->out;
  // As root, a restore without --start hands the directory to the postgres user and says how
  // to start it as that user.
  EXPECT_NE(r->out.find("start it with: runuser -u postgres -- "), std::string::npos) << r->out;
  EXPECT_NE(r->out.find(local::PgBinDir().value_or("?") + "/pg_ctl -D " + c.dir + "/latest"), std::string::npos)
      << r->out;
  struct stat data_dir;
  ASSERT_EQ(stat((c.dir + "/latest").c_str(), &data_dir), 0);
  EXPECT_EQ(data_dir.st_uid, getpwnam("postgres")->pw_uid);
  auto pg = restore::StartRestoredPostgres(c.dir + "/latest", 0, 300);
  ASSERT_TRUE(pg.ok()) << pg.status();
  EXPECT_EQ(TableChecksums(*pg->server), sums);
  ASSERT_TRUE(pg->server->Stop().ok());

  // One permission model for every command that wrote here (run, backup, mark, drill): the
  // archive directory has group access, so every directory is 2750 and every file 0640.
  for (const auto& e : std::filesystem::recursive_directory_iterator(c.archive)) {
    struct stat st;
    ASSERT_EQ(lstat(e.path().c_str(), &st), 0);
    const unsigned mode = st.st_mode & 07777;
    EXPECT_EQ(mode, S_ISDIR(st.st_mode) ? 02750u : 0640u) << e.path() << " has mode " << std::oct << mode;
  }
}

}  // namespace
}  // namespace ferry::testing
