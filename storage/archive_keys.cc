#include "storage/archive_keys.h"

#include <openssl/crypto.h>

#include <filesystem>

#include "absl/synchronization/mutex.h"
#include "pipeline/check.h"
#include "storage/durable_file.h"

namespace ferry::storage {
namespace {

absl::Mutex keys_mu(absl::kConstInit);

std::shared_ptr<const pipeline::Keyring>& Keys() {
  static auto* keys = new std::shared_ptr<const pipeline::Keyring>();  // never destroyed
  return *keys;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const pipeline::Keyring>> LoadKeyFile(const std::string& path) {
  // Group-readable allowed: the service's user owns it, postgres (restore_command) reads it.
  FERRY_ASSIGN_OR_RETURN(std::string text, ReadSecretFile(path, /*group_may_read=*/true));
  // Absolute: the path is handed on to processes that run elsewhere (restore_command).
  auto keys = pipeline::Keyring::Parse(text, std::filesystem::absolute(path).lexically_normal().string());
  OPENSSL_cleanse(text.data(), text.size());
  return keys;
}

std::shared_ptr<const pipeline::Keyring> ProcessKeys() {
  absl::MutexLock lock(&keys_mu);
  return Keys();
}

void SetProcessKeys(std::shared_ptr<const pipeline::Keyring> keys) {
  absl::MutexLock lock(&keys_mu);
  Keys() = std::move(keys);
}

}  // namespace ferry::storage
