// The keys a process encrypts and decrypts archives with (pipeline/cipher.h). A process has
// one set: tools/cli.cc installs it at start-up from the config's [archive]
// encryption_key_file or the FERRY_KEY_FILE environment variable (how restore_command's
// `ferry wal-fetch` gets it), and archives and snapshot stores opened without keys of their
// own use it.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "pipeline/cipher.h"

namespace ferry::storage {

// The environment variable that names a key file for commands run without a config.
inline constexpr char kKeyFileEnv[] = "FERRY_KEY_FILE";

// Reads and parses a key file, which must be private to its owner and, at most, readable by
// its group (ReadSecretFile; mode 600 or 640).
absl::StatusOr<std::shared_ptr<const pipeline::Keyring>> LoadKeyFile(const std::string& path);

// The process's keys; null when it has none (archives are then written in the clear).
std::shared_ptr<const pipeline::Keyring> ProcessKeys();
void SetProcessKeys(std::shared_ptr<const pipeline::Keyring> keys);

}  // namespace ferry::storage
