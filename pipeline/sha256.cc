#include "pipeline/sha256.h"

#include <openssl/evp.h>

namespace ferry::pipeline {

Sha256Digest Sha256(absl::string_view bytes) {
  Sha256Digest d;
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), d.data(), &len, EVP_sha256(), nullptr);
  return d;
}

}  // namespace ferry::pipeline
