// The service's continuous verification: what it archived is read back, on a budget, so that
// damage anywhere in the archive turns health red between drills, named, long before a restore
// needs those bytes.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ferry::service {

class ArchiveVerifier {
 public:
  // Reads at most `bytes_per_second` of stored frames a second (rounds of `round`): every
  // round the frames synced since the last one, and frames found damaged again; with what is
  // left, a sweep of the whole archive, one starting every `sweep_every` (on a fresh open,
  // so that segments retention removed are no longer read and new sources are).
  ArchiveVerifier(std::string archive_path, uint64_t bytes_per_second, absl::Duration sweep_every = absl::Hours(1),
                  absl::Duration round = absl::Seconds(1));
  ~ArchiveVerifier();  // stops and joins
  ArchiveVerifier(const ArchiveVerifier&) = delete;
  ArchiveVerifier& operator=(const ArchiveVerifier&) = delete;

  // "FILE at offset N: reason" for every damaged spot known now. A spot leaves the list when
  // it reads back intact (repaired, or removed by retention).
  std::vector<std::string> Damage() const;
  uint64_t verified_bytes() const { return verified_bytes_.load(std::memory_order_relaxed); }
  uint64_t sweeps() const { return sweeps_.load(std::memory_order_relaxed); }  // begun

 private:
  class Worker;  // the thread's own state and steps (archive_verifier.cc)
  void Run();

  const std::string archive_path_;
  const uint64_t bytes_per_round_;
  const absl::Duration sweep_every_;
  const absl::Duration round_;
  std::atomic<uint64_t> verified_bytes_{0};
  std::atomic<uint64_t> sweeps_{0};
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::string> damage_ ABSL_GUARDED_BY(mu_);  // "file@offset" -> message
  std::thread thread_;
};

}  // namespace ferry::service
