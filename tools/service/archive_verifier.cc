#include "tools/service/archive_verifier.h"

#include <spdlog/spdlog.h>

#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "storage/archive.h"

namespace ferry::tools {
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

void ArchiveVerifier::Run() {
  std::unique_ptr<storage::Archive> archive;
  std::map<std::string, Cursor> cursors;  // "source/stream"
  // Frames found damaged, read again every round until they check out (repaired) or are gone.
  std::map<std::string, std::pair<std::string, size_t>> recheck;  // spot -> (stream key, frame)
  std::set<std::string> open_spots;  // damage_ keys the last survey open reported
  absl::Time last_sweep_start = absl::InfinitePast();
  bool sweeping = false;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), round_)) return;
    }
    bool reopened = false;
    if (archive == nullptr || (!sweeping && absl::Now() - last_sweep_start >= sweep_every_)) {
      // A sweep starts on a fresh open: what retention removed is no longer listed, new sources
      // are, and a survey open's damage (a spot no frame is listed for) is found again.
      storage::ArchiveOptions options;
      options.survey = true;
      auto opened = storage::Archive::Open(archive_path_, options);
      absl::MutexLock lock(&mu_);
      if (!opened.ok()) {
        damage_["(open)"] = std::string(opened.status().message());
        continue;
      }
      damage_.erase("(open)");
      archive = std::move(*opened);
      for (auto& [key, c] : cursors) c.sweep = 0;
      recheck.clear();
      reopened = sweeping = true;
      last_sweep_start = absl::Now();
      sweeps_.fetch_add(1, std::memory_order_relaxed);
    }
    uint64_t budget = bytes_per_round_;
    bool swept = true;
    for (const std::string& source : archive->Sources()) {
      for (pipeline::StreamKind kind : archive->Streams(source)) {
        const std::string key = absl::StrCat(source, "/", pipeline::StreamKindName(kind));
        auto log = archive->Stream(source, kind);
        if (!log.ok()) {
          absl::MutexLock lock(&mu_);
          damage_[key] = absl::StrCat("source ", source, ": ", log.status().message());
          continue;
        }
        Cursor& c = cursors[key];
        const auto& frames = (*log)->frames();
        if (reopened) {
          absl::MutexLock lock(&mu_);
          damage_.erase(key);
          // Spots the last open reported stay only while this open reports them too.
          for (auto it = open_spots.begin(); it != open_spots.end();) {
            if (absl::StartsWith(*it, (*log)->dir())) {
              damage_.erase(*it);
              it = open_spots.erase(it);
            } else {
              ++it;
            }
          }
          for (const storage::Damage& d : (*log)->open_damage()) {
            const std::string spot = absl::StrCat(d.file, "@", d.offset);
            damage_[spot] = absl::StrCat(d.file, " at offset ", d.offset, ": ", d.reason);
            open_spots.insert(spot);
          }
          c.fresh = 0;
          while (c.fresh < frames.size() && (frames[c.fresh].header.epoch < c.fresh_epoch ||
                                             (frames[c.fresh].header.epoch == c.fresh_epoch &&
                                              frames[c.fresh].header.end_pos <= c.fresh_end))) {
            ++c.fresh;
          }
        }
        (void)(*log)->Refresh();  // frames synced since the last round
        auto result = [&](size_t i, const absl::Status& st) {
          const storage::FrameLocation& f = frames[i];
          const std::string spot = absl::StrCat((*log)->SegmentPath(f.segment_seq), "@", f.offset);
          verified_bytes_.fetch_add(f.header.frame_size(), std::memory_order_relaxed);
          absl::MutexLock lock(&mu_);
          // A segment file gone is retention at work (it removes whole sealed segments); the
          // next sweep's open no longer lists it.
          if (st.ok() || absl::IsNotFound(st)) {
            damage_.erase(spot);
            recheck.erase(spot);
            return;
          }
          recheck[spot] = {key, i};
          if (damage_.emplace(spot, std::string(st.message())).second) {
            spdlog::error("event=archive_damage source={} stream={} error=\"{}\"", source,
                          std::string(pipeline::StreamKindName(kind)), std::string(st.message()));
          }
        };
        // Checks frames from *cursor on, as many as the budget allows (at least one), and moves
        // the cursor past them; stops at `limit`.
        auto advance = [&](size_t* cursor, size_t limit) {
          if (budget == 0 || *cursor >= limit) return;
          size_t to = *cursor;
          uint64_t bytes = 0;
          while (to < limit && (to == *cursor || bytes + frames[to].header.frame_size() <= budget)) {
            bytes += frames[to++].header.frame_size();
          }
          (*log)->CheckFrames(*cursor, to - 1, result);
          budget -= std::min(budget, bytes);
          *cursor = to;
        };
        std::vector<size_t> again;
        for (const auto& [spot, where] : recheck) {
          if (where.first == key && where.second < frames.size()) again.push_back(where.second);
        }
        for (size_t i : again) (*log)->CheckFrames(i, i, result);
        advance(&c.fresh, frames.size());
        if (c.fresh > 0) {
          c.fresh_epoch = frames[c.fresh - 1].header.epoch;
          c.fresh_end = frames[c.fresh - 1].header.end_pos;
        }
        if (sweeping) {
          advance(&c.sweep, c.fresh);
          if (c.sweep < c.fresh) swept = false;
        }
      }
    }
    if (sweeping && swept) sweeping = false;  // the next starts sweep_every after this one did
  }
}

}  // namespace ferry::tools
