// libFuzzer target: the archive's frame and segment reader. The input is one segment file
// (the seed corpus: segments of a real archive, tests/fuzz/make_corpus.sh); it is opened
// read-only as a stream's only segment, verified, and every frame it lists is read back. The
// frame decoder also gets the input directly, as a frame.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "pipeline/frame.h"
#include "storage/segment_format.h"
#include "storage/stream_log.h"

namespace {
std::string g_dir;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/ferry-fuzz-segment-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) std::abort();
  g_dir = tmpl;
  std::atexit([] {
    unlink((g_dir + "/" + ferry::storage::SegmentFileName(1)).c_str());
    rmdir(g_dir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::string scratch;
  if (auto h = ferry::pipeline::DecodeFrameHeader(bytes); h.ok() && h->frame_size() <= size) {
    (void)ferry::pipeline::DecodeFramePayload(*h, bytes.substr(ferry::pipeline::kFrameHeaderSize,
                                                               h->frame_size() - ferry::pipeline::kFrameHeaderSize),
                                              &scratch);
  }

  const std::string path = g_dir + "/" + ferry::storage::SegmentFileName(1);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  // Opened as the kind its header claims, so that seeds of every stream get past the check.
  auto header = ferry::storage::DecodeSegmentHeader(bytes);
  auto log = ferry::storage::StreamLog::Open(
      g_dir, header.ok() ? header->kind : ferry::pipeline::StreamKind::kRedisCommands,
      ferry::storage::StreamLogOptions{});
  if (!log.ok()) return 0;
  std::vector<ferry::storage::Damage> damage;
  (void)(*log)->Verify(&damage);
  for (const auto& loc : (*log)->frames()) (void)(*log)->ReadRecords(loc, &scratch);
  return 0;
}
