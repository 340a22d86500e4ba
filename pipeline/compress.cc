#include "pipeline/compress.h"

#include <zstd.h>
#include <zstd_errors.h>

#include "absl/strings/str_cat.h"

namespace ferry::pipeline {

absl::Status AppendZstd(absl::string_view raw, int level, std::string* out) {
  struct CCtx {
    ZSTD_CCtx* ctx = ZSTD_createCCtx();
    ~CCtx() { ZSTD_freeCCtx(ctx); }
  };
  thread_local CCtx cctx;
  const size_t at = out->size();
  const size_t bound = ZSTD_compressBound(raw.size());
  out->resize(at + bound);
  const size_t n = ZSTD_compressCCtx(cctx.ctx, out->data() + at, bound, raw.data(), raw.size(), level);
  if (ZSTD_isError(n)) {
    out->resize(at);
    // With a bound-sized buffer and a level from 0 to 19, zstd fails only for want of memory;
    // anything else is a bug in the call.
    const std::string why = absl::StrCat("zstd compress: ", ZSTD_getErrorName(n));
    if (ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation) return absl::ResourceExhaustedError(why);
    return absl::InternalError(why);
  }
  out->resize(at + n);
  return absl::OkStatus();
}

absl::Status CompressZstd(absl::string_view raw, int level, std::string* out) {
  out->clear();
  return AppendZstd(raw, level, out);
}

absl::Status DecompressZstd(absl::string_view stored, size_t raw_len, absl::string_view what,
                            std::string* out) {
  // One decompression context per thread: ZSTD_decompress would allocate and free one (and
  // its window) per call, which dominates reading an archive of small frames.
  struct DCtx {
    ZSTD_DCtx* ctx = ZSTD_createDCtx();
    ~DCtx() { ZSTD_freeDCtx(ctx); }
  };
  thread_local DCtx dctx;
  out->resize(raw_len);
  const size_t n = ZSTD_decompressDCtx(dctx.ctx, out->data(), raw_len, stored.data(), stored.size());
  if (ZSTD_isError(n) || n != raw_len) {
    return absl::DataLossError(absl::StrCat(
        what, ": zstd data does not decompress to ", raw_len, " bytes (",
        ZSTD_isError(n) ? ZSTD_getErrorName(n) : absl::StrCat("got ", n), ")"));
  }
  return absl::OkStatus();
}

}  // namespace ferry::pipeline
