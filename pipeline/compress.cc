#include "pipeline/compress.h"

#include <zstd.h>

#include "absl/strings/str_cat.h"

namespace ferry::pipeline {

absl::Status CompressZstd(absl::string_view raw, int level, std::string* out) {
  out->resize(ZSTD_compressBound(raw.size()));
  const size_t n = ZSTD_compress(out->data(), out->size(), raw.data(), raw.size(), level);
  if (ZSTD_isError(n)) {
    return absl::InternalError(absl::StrCat("zstd compress: ", ZSTD_getErrorName(n)));
  }
  out->resize(n);
  return absl::OkStatus();
}

absl::Status DecompressZstd(absl::string_view stored, size_t raw_len, absl::string_view what,
                            std::string* out) {
  out->resize(raw_len);
  const size_t n = ZSTD_decompress(out->data(), raw_len, stored.data(), stored.size());
  if (ZSTD_isError(n) || n != raw_len) {
    return absl::DataLossError(absl::StrCat(
        what, ": zstd data does not decompress to ", raw_len, " bytes (",
        ZSTD_isError(n) ? ZSTD_getErrorName(n) : absl::StrCat("got ", n), ")"));
  }
  return absl::OkStatus();
}

}  // namespace ferry::pipeline
