// Encryption at rest: AES-256-GCM (OpenSSL EVP) under numbered keys. Frames and snapshot
// chunks are sealed with the newest key; any key in the ring opens what it sealed, which is
// how a key is rotated (add a line with a higher id, keep the old lines for reading).
// Sealed layout (docs/archive-format.md "Encryption"):
//   salt(16) || nonce(12) || ciphertext || tag(16)
// under the one-use key HKDF-SHA256(key, salt): a random salt per seal takes away GCM's
// limit of 2^32 random nonces per key, which a busy archive would reach in weeks.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::pipeline {

inline constexpr size_t kSealSaltBytes = 16;
inline constexpr size_t kSealNonceBytes = 12;
inline constexpr size_t kSealTagBytes = 16;
// Bytes sealing adds to a plaintext.
inline constexpr size_t kSealOverhead = kSealSaltBytes + kSealNonceBytes + kSealTagBytes;

// Immutable once parsed; shared between threads.
class Keyring {
 public:
  // The key file's text: one key per line, "<id> <64 hex digits>" (id 1..65535), blank lines
  // and '#' comments allowed. kInvalidArgument naming `origin` and the line otherwise.
  static absl::StatusOr<std::shared_ptr<const Keyring>> Parse(absl::string_view text, std::string origin);

  // The key new data is sealed with: the highest id.
  uint16_t current_id() const { return keys_.rbegin()->first; }
  bool Has(uint16_t id) const { return keys_.count(id) > 0; }
  // Where the keys came from (the key file's path), for messages and restore_command.
  const std::string& origin() const { return origin_; }

  // Appends the sealed form of `plain` (layout above) under key `id`, which must be in the
  // ring, to *out; on failure *out is as it was.
  absl::Status Seal(uint16_t id, absl::string_view aad, absl::string_view plain, std::string* out) const;
  // Checks the tag and writes the plaintext to *out. kFailedPrecondition when the ring lacks
  // key `id`; kDataLoss when authentication fails (wrong key, or tampered bytes or aad). On
  // failure *out is empty: nothing unauthenticated is ever handed out.
  absl::Status Open(uint16_t id, absl::string_view aad, absl::string_view sealed, std::string* out) const;

  // 16 hex digits that identify key `id` without revealing it (HMAC-SHA256 of a fixed text
  // under the key): the archive records them, so a different key reusing an id is caught.
  std::string CheckValue(uint16_t id) const;
  std::vector<uint16_t> ids() const;

  Keyring(const Keyring&) = delete;
  Keyring& operator=(const Keyring&) = delete;

 private:
  explicit Keyring(std::string origin) : origin_(std::move(origin)) {}
  std::string origin_;
  std::map<uint16_t, std::string> keys_;  // id -> 32 key bytes
};

// The error for data sealed with a key this process was not given: says how to give it.
absl::Status MissingKeyError(uint16_t id, const Keyring* keys);

}  // namespace ferry::pipeline
