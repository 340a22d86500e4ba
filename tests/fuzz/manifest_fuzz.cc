// libFuzzer target: the snapshot manifest parser (the seed corpus: manifests of a real
// archive's PostgreSQL base backup and Redis RDB, tests/fuzz/make_corpus.sh).
#include <cstddef>
#include <cstdint>

#include "storage/snapshot_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)ferry::storage::ParseSnapshotManifest(absl::string_view(reinterpret_cast<const char*>(data), size),
                                              "fuzz");
  return 0;
}
