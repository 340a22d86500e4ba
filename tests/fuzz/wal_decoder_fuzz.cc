// libFuzzer target: WalDecoder over arbitrary bytes fed as WAL from the start of a 1 MiB
// segment (the seed corpus holds real PostgreSQL 15 WAL, tests/testdata/wal_sample). The
// first input byte chooses where the bytes are split into two Feed calls, as the network
// splits them. Any outcome but a crash or a sanitizer report is fine; an error must stop
// the decoder.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ingest/pg/wal_decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t split = size > 1 ? (static_cast<size_t>(data[0]) * (size - 1)) / 255 : 0;
  const char* wal = reinterpret_cast<const char*>(data + 1);
  const size_t len = size - 1;
  ferry::ingest::pg::WalDecoder decoder(1 << 20, 0);
  decoder.Reset(ferry::pipeline::Lsn(0x20000000), /*at_record_boundary=*/false);
  std::vector<ferry::ingest::pg::CommitInfo> commits;
  if (decoder.Feed(absl::string_view(wal, split), &commits).ok()) {
    (void)decoder.Feed(absl::string_view(wal + split, len - split), &commits);
  }
  return 0;
}
