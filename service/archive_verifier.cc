// ArchiveVerifier: the thread that reads the archive back, round by round, and the damage it knows of.
#include "service/archive_verifier.h"

#include <spdlog/spdlog.h>

#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "storage/archive.h"

namespace ferry::service {
namespace {

// One stream's place: `fresh` follows the newest frames, `sweep` walks the whole stream from
// its first frame during a sweep.
struct Cursor {
  size_t fresh = 0;
  size_t sweep = 0;
  // The last frame `fresh` checked, to find its place again in a reopened archive (retention
  // may have removed frames before it).
  uint32_t fresh_epoch = 0;
  uint64_t fresh_end = 0;
};

}  // namespace

ArchiveVerifier::ArchiveVerifier(std::string archive_path, uint64_t bytes_per_second, absl::Duration sweep_every,
                                 absl::Duration round)
    : archive_path_(std::move(archive_path)),
      bytes_per_round_(std::max<uint64_t>(1, static_cast<uint64_t>(static_cast<double>(bytes_per_second) *
                                                                    absl::ToDoubleSeconds(round)))),
      sweep_every_(sweep_every),
      round_(round) {
  thread_ = std::thread([this] { Run(); });
}

ArchiveVerifier::~ArchiveVerifier() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

std::vector<std::string> ArchiveVerifier::Damage() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [spot, message] : damage_) out.push_back(message);
  return out;
}

// The verifier thread's state: the archive it has open, each stream's place, the damaged
// frames it reads again, and its steps. Nested in ArchiveVerifier to record what it finds.
class ArchiveVerifier::Worker {
 public:
  explicit Worker(ArchiveVerifier& verifier) : v_(verifier) {}

  // Reopens the archive when a sweep is due, then checks frames of every stream as far as
  // this round's budget goes.
  void Round();

 private:
  // One stream in one round.
  struct StreamPass {
    storage::StreamLog& log;
    const std::string& source;
    pipeline::StreamKind kind;
    std::string key;  // "source/stream"
  };

  bool Reopen();  // false: the archive does not open (recorded as damage)
  void CheckStream(const std::string& source, pipeline::StreamKind kind, bool reopened);
  void TakeOpenDamage(const StreamPass& p, Cursor& c);
  void Record(const StreamPass& p, size_t i, const absl::Status& st);
  void Advance(const StreamPass& p, size_t* cursor, size_t limit);

  ArchiveVerifier& v_;
  std::unique_ptr<storage::Archive> archive_;
  std::map<std::string, Cursor> cursors_;  // "source/stream"
  // Frames found damaged, read again every round until they check out (repaired) or are gone.
  std::map<std::string, std::pair<std::string, size_t>> recheck_;  // spot -> (stream key, frame)
  std::set<std::string> open_spots_;  // damage_ keys the last survey open reported
  absl::Time last_sweep_start_ = absl::InfinitePast();
  bool sweeping_ = false;
  uint64_t budget_ = 0;  // this round's bytes left
  bool swept_ = true;    // this round's sweep reached every stream's fresh cursor
};

void ArchiveVerifier::Worker::Round() {
  bool reopened = false;
  if (archive_ == nullptr || (!sweeping_ && absl::Now() - last_sweep_start_ >= v_.sweep_every_)) {
    if (!Reopen()) return;
    reopened = true;
  }
  budget_ = v_.bytes_per_round_;
  swept_ = true;
  for (const std::string& source : archive_->Sources()) {
    for (pipeline::StreamKind kind : archive_->Streams(source)) CheckStream(source, kind, reopened);
  }
  if (sweeping_ && swept_) sweeping_ = false;  // the next starts sweep_every after this one did
}

bool ArchiveVerifier::Worker::Reopen() {
  // A sweep starts on a fresh open: what retention removed is no longer listed, new sources
  // are, and a survey open's damage (a spot no frame is listed for) is found again.
  storage::ArchiveOptions options;
  options.survey = true;
  auto opened = storage::Archive::Open(v_.archive_path_, options);
  absl::MutexLock lock(&v_.mu_);
  if (!opened.ok()) {
    v_.damage_["(open)"] = std::string(opened.status().message());
    return false;
  }
  v_.damage_.erase("(open)");
  archive_ = std::move(*opened);
  for (auto& [key, c] : cursors_) c.sweep = 0;
  recheck_.clear();
  sweeping_ = true;
  last_sweep_start_ = absl::Now();
  v_.sweeps_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void ArchiveVerifier::Worker::CheckStream(const std::string& source, pipeline::StreamKind kind, bool reopened) {
  std::string key = absl::StrCat(source, "/", pipeline::StreamKindName(kind));
  auto log = archive_->Stream(source, kind);
  if (!log.ok()) {
    absl::MutexLock lock(&v_.mu_);
    v_.damage_[key] = absl::StrCat("source ", source, ": ", log.status().message());
    return;
  }
  const StreamPass p{**log, source, kind, std::move(key)};
  Cursor& c = cursors_[p.key];
  const auto& frames = p.log.frames();
  if (reopened) TakeOpenDamage(p, c);
  (void)p.log.Refresh();  // frames synced since the last round
  std::vector<size_t> again;
  for (const auto& [spot, where] : recheck_) {
    if (where.first == p.key && where.second < frames.size()) again.push_back(where.second);
  }
  for (size_t i : again) p.log.CheckFrames(i, i, [&](size_t j, const absl::Status& st) { Record(p, j, st); });
  Advance(p, &c.fresh, frames.size());
  if (c.fresh > 0) {
    c.fresh_epoch = frames[c.fresh - 1].header.epoch;
    c.fresh_end = frames[c.fresh - 1].header.end_pos;
  }
  if (sweeping_) {
    Advance(p, &c.sweep, c.fresh);
    if (c.sweep < c.fresh) swept_ = false;
  }
}

// On a fresh open: the stream's damage as this open reports it, and its fresh cursor found again.
void ArchiveVerifier::Worker::TakeOpenDamage(const StreamPass& p, Cursor& c) {
  {
    absl::MutexLock lock(&v_.mu_);
    v_.damage_.erase(p.key);
    // Spots the last open reported stay only while this open reports them too.
    for (auto it = open_spots_.begin(); it != open_spots_.end();) {
      if (absl::StartsWith(*it, p.log.dir())) {
        v_.damage_.erase(*it);
        it = open_spots_.erase(it);
      } else {
        ++it;
      }
    }
    for (const storage::Damage& d : p.log.open_damage()) {
      const std::string spot = absl::StrCat(d.file, "@", d.offset);
      v_.damage_[spot] = absl::StrCat(d.file, " at offset ", d.offset, ": ", d.reason);
      open_spots_.insert(spot);
    }
  }
  const auto& frames = p.log.frames();
  c.fresh = 0;
  while (c.fresh < frames.size() && (frames[c.fresh].header.epoch < c.fresh_epoch ||
                                     (frames[c.fresh].header.epoch == c.fresh_epoch &&
                                      frames[c.fresh].header.end_pos <= c.fresh_end))) {
    ++c.fresh;
  }
}

// The result of checking frame i: damage recorded (and read again next round) or cleared.
void ArchiveVerifier::Worker::Record(const StreamPass& p, size_t i, const absl::Status& st) {
  const storage::FrameLocation& f = p.log.frames()[i];
  const std::string spot = absl::StrCat(p.log.SegmentPath(f.segment_seq), "@", f.offset);
  v_.verified_bytes_.fetch_add(f.header.frame_size(), std::memory_order_relaxed);
  absl::MutexLock lock(&v_.mu_);
  // A segment file gone is retention at work (it removes whole sealed segments); the
  // next sweep's open no longer lists it.
  if (st.ok() || absl::IsNotFound(st)) {
    v_.damage_.erase(spot);
    recheck_.erase(spot);
    return;
  }
  recheck_[spot] = {p.key, i};
  if (v_.damage_.emplace(spot, std::string(st.message())).second) {
    spdlog::error("event=archive_damage source={} stream={} error=\"{}\"", p.source,
                  std::string(pipeline::StreamKindName(p.kind)), std::string(st.message()));
  }
}

// Checks frames from *cursor on, as many as the budget allows (at least one), and moves
// the cursor past them; stops at `limit`.
void ArchiveVerifier::Worker::Advance(const StreamPass& p, size_t* cursor, size_t limit) {
  if (budget_ == 0 || *cursor >= limit) return;
  const auto& frames = p.log.frames();
  size_t to = *cursor;
  uint64_t bytes = 0;
  while (to < limit && (to == *cursor || bytes + frames[to].header.frame_size() <= budget_)) {
    bytes += frames[to++].header.frame_size();
  }
  p.log.CheckFrames(*cursor, to - 1, [&](size_t i, const absl::Status& st) { Record(p, i, st); });
  budget_ -= std::min(budget_, bytes);
  *cursor = to;
}

void ArchiveVerifier::Run() {
  Worker worker(*this);
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), round_)) return;
    }
    worker.Round();
  }
}

}  // namespace ferry::service
