// Micro benchmarks of the archive write path: frame encode/decode per zstd level, and both
// durable writers with one fdatasync per group commit. Measures; never pass/fail.
#include <stdlib.h>

#include <filesystem>
#include <random>

#include <benchmark/benchmark.h>

#include "pipeline/frame.h"
#include "storage/stream_log.h"

namespace {

using ferry::pipeline::Record;

// WAL-like payload: half compressible structure, half noise.
std::vector<Record> MakeRecords(size_t count, size_t bytes) {
  std::mt19937 rng(1);
  std::vector<Record> records;
  uint64_t pos = 0;
  for (size_t i = 0; i < count; ++i) {
    Record r;
    r.payload.resize(bytes);
    for (size_t j = 0; j < bytes; ++j) {
      r.payload[j] = (j % 16 < 8) ? static_cast<char>(j % 251) : static_cast<char>(rng());
    }
    pos += bytes;
    r.end_pos = pos;
    records.push_back(std::move(r));
  }
  return records;
}

void BM_FrameEncode(benchmark::State& state) {
  auto records = MakeRecords(8, 128 << 10);
  std::string out;
  for (auto _ : state) {
    out.clear();
    auto h = ferry::pipeline::EncodeFrame({1, 0, 0, records}, static_cast<int>(state.range(0)), &out);
    benchmark::DoNotOptimize(h);
  }
  state.SetBytesProcessed(state.iterations() * 8 * (128 << 10));
}
BENCHMARK(BM_FrameEncode)->Arg(0)->Arg(1)->Arg(2)->Arg(3);

void BM_FrameDecode(benchmark::State& state) {
  auto records = MakeRecords(8, 128 << 10);
  std::string out;
  auto h = ferry::pipeline::EncodeFrame({1, 0, 0, records}, static_cast<int>(state.range(0)), &out);
  std::string scratch;
  for (auto _ : state) {
    auto v = ferry::pipeline::DecodeFramePayload(*h, absl::string_view(out).substr(ferry::pipeline::kFrameHeaderSize), &scratch);
    benchmark::DoNotOptimize(v);
  }
  state.SetBytesProcessed(state.iterations() * 8 * (128 << 10));
}
BENCHMARK(BM_FrameDecode)->Arg(0)->Arg(1)->Arg(3);

// Encryption at rest's cost: the same frames sealed (AES-256-GCM, a derived key per seal),
// encoded then decoded, at zstd level range(0).
std::shared_ptr<const ferry::pipeline::Keyring> BenchKeys() {
  return *ferry::pipeline::Keyring::Parse("1 " + std::string(64, 'a'), "bench");
}

void BM_FrameEncodeSealed(benchmark::State& state) {
  auto records = MakeRecords(8, 128 << 10);
  auto keys = BenchKeys();
  std::string out;
  for (auto _ : state) {
    out.clear();
    auto h = ferry::pipeline::EncodeFrame({1, 0, 0, records}, static_cast<int>(state.range(0)), &out, keys.get());
    benchmark::DoNotOptimize(h);
  }
  state.SetBytesProcessed(state.iterations() * 8 * (128 << 10));
}
BENCHMARK(BM_FrameEncodeSealed)->Arg(0)->Arg(1);

void BM_FrameDecodeSealed(benchmark::State& state) {
  auto records = MakeRecords(8, 128 << 10);
  auto keys = BenchKeys();
  std::string out, scratch;
  auto h = ferry::pipeline::EncodeFrame({1, 0, 0, records}, static_cast<int>(state.range(0)), &out, keys.get());
  for (auto _ : state) {
    auto v = ferry::pipeline::DecodeFramePayload(*h, absl::string_view(out).substr(ferry::pipeline::kFrameHeaderSize),
                                                 &scratch, keys.get());
    benchmark::DoNotOptimize(v);
  }
  state.SetBytesProcessed(state.iterations() * 8 * (128 << 10));
}
BENCHMARK(BM_FrameDecodeSealed)->Arg(0)->Arg(1);

// One group commit per iteration: range(1) bytes of frames, written and fdatasync'ed.
void BM_WriterGroupCommit(benchmark::State& state) {
  const auto kind = state.range(0) == 0 ? ferry::storage::WriterKind::kIoUring : ferry::storage::WriterKind::kPosix;
  char tmpl[] = "/tmp/ferry-bench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  ferry::storage::StreamLogOptions o;
  o.writer = kind;
  o.read_only = false;
  o.segment_bytes = 256 << 20;
  auto log = ferry::storage::StreamLog::Open(dir, ferry::pipeline::StreamKind::kPgWal, o);
  const size_t batch = static_cast<size_t>(state.range(1));
  auto records = MakeRecords(1, batch);
  uint64_t pos = 0;
  for (auto _ : state) {
    state.PauseTiming();
    ferry::pipeline::EncodedFrames frames;
    records[0].end_pos = pos + batch;
    auto h = ferry::pipeline::EncodeFrame({1, pos, 0, records}, 0, &frames.bytes);
    frames.headers.push_back(*h);
    pos += batch;
    state.ResumeTiming();
    if (!(*log)->Write(frames).ok()) state.SkipWithError("write failed");
  }
  state.SetBytesProcessed(state.iterations() * batch);
  state.counters["fdatasync/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  log->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_WriterGroupCommit)
    ->ArgNames({"posix", "bytes"})
    ->Args({0, 8 << 10})->Args({1, 8 << 10})
    ->Args({0, 1 << 20})->Args({1, 1 << 20})
    ->UseRealTime();

}  // namespace
