// SHA-256 (OpenSSL), the strong hash behind snapshot chunk ids and PostgreSQL's
// Manifest-Checksum.
#pragma once

#include <array>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace ferry::pipeline {

using Sha256Digest = std::array<uint8_t, 32>;

Sha256Digest Sha256(absl::string_view bytes);

}  // namespace ferry::pipeline
