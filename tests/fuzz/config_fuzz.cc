// libFuzzer target: the config loader (the seed corpus: tools/ferry.example.toml and
// tools/ferry.mirror.example.toml).
#include <cstddef>
#include <cstdint>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)ferry::config::ParseConfig(absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
  return 0;
}
