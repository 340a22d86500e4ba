// libFuzzer target: one pgoutput message (the seed corpus: real messages of PostgreSQL 15,
// tests/fuzz/make_corpus.sh). The first byte says whether it arrives inside a streamed
// transaction, where most messages carry an xid first.
#include <cstddef>
#include <cstdint>

#include "ingest/pg/pgoutput.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool in_stream = (data[0] & 1) != 0;
  (void)ferry::ingest::pg::ParsePgOutput(
      absl::string_view(reinterpret_cast<const char*>(data + 1), size - 1), in_stream);
  return 0;
}
