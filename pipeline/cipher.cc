#include "pipeline/cipher.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ferry::pipeline {
namespace {

constexpr size_t kKeyBytes = 32;

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

bool IsHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

absl::Status OpensslError(absl::string_view what) {
  return absl::InternalError(absl::StrCat("AES-256-GCM ", what, " failed (OpenSSL)"));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Keyring>> Keyring::Parse(absl::string_view text, std::string origin) {
  // The keys are wiped when the last holder lets go (OPENSSL_cleanse cannot be optimised away).
  std::shared_ptr<Keyring> ring(new Keyring(std::move(origin)), [](Keyring* k) {
    for (auto& [id, key] : k->keys_) OPENSSL_cleanse(key.data(), key.size());
    delete k;
  });
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(ring->origin_, ":", line_no, ": ", why,
                                                     "; each line is \"<id> <64 hex digits>\", e.g. made with: echo "
                                                     "\"1 $(openssl rand -hex 32)\""));
    };
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    uint32_t id = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &id)) return bad("expected a key id and a key");
    if (id < 1 || id > 65535) return bad(absl::StrCat("key id ", parts[0], " is not in 1..65535"));
    if (parts[1].size() != 2 * kKeyBytes || !IsHex(parts[1])) return bad("the key is not 64 hex digits (256 bits)");
    if (!ring->keys_.emplace(static_cast<uint16_t>(id), absl::HexStringToBytes(parts[1])).second) {
      return bad(absl::StrCat("key id ", id, " appears twice"));
    }
  }
  if (ring->keys_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(ring->origin_, ": no key in the key file"));
  }
  return std::shared_ptr<const Keyring>(std::move(ring));
}

absl::Status Keyring::Seal(uint16_t id, absl::string_view aad, absl::string_view plain, std::string* out) const {
  auto key = keys_.find(id);
  if (key == keys_.end()) return MissingKeyError(id, this);
  const size_t at = out->size();
  out->resize(at + kSealOverhead + plain.size());
  auto* nonce = reinterpret_cast<unsigned char*>(out->data() + at);
  auto* ct = nonce + kSealNonceBytes;
  if (RAND_bytes(nonce, kSealNonceBytes) != 1) return OpensslError("nonce");
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                         reinterpret_cast<const unsigned char*>(key->second.data()), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), ct, &n, reinterpret_cast<const unsigned char*>(plain.data()),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), ct + n, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kSealTagBytes, ct + plain.size()) != 1) {
    out->resize(at);
    return OpensslError("encryption");
  }
  return absl::OkStatus();
}

absl::Status Keyring::Open(uint16_t id, absl::string_view aad, absl::string_view sealed, std::string* out) const {
  auto key = keys_.find(id);
  if (key == keys_.end()) return MissingKeyError(id, this);
  if (sealed.size() < kSealOverhead) return absl::DataLossError("sealed bytes shorter than nonce and tag");
  const size_t len = sealed.size() - kSealOverhead;
  const auto* nonce = reinterpret_cast<const unsigned char*>(sealed.data());
  const auto* ct = nonce + kSealNonceBytes;
  out->resize(len);
  auto* pt = reinterpret_cast<unsigned char*>(out->data());
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                         reinterpret_cast<const unsigned char*>(key->second.data()), nonce) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), pt, &n, ct, static_cast<int>(len)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kSealTagBytes,
                          const_cast<unsigned char*>(ct + len)) != 1) {
    return OpensslError("decryption");
  }
  if (EVP_DecryptFinal_ex(ctx.get(), pt + n, &n) != 1) {
    // Nothing unauthenticated leaves this function.
    OPENSSL_cleanse(out->data(), out->size());
    out->clear();
    return absl::DataLossError(absl::StrCat("authentication failed under key ", id,
                                            " (tampered bytes, or a different key with this id)"));
  }
  return absl::OkStatus();
}

absl::Status MissingKeyError(uint16_t id, const Keyring* keys) {
  if (keys == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "encrypted with key ", id, " and ferry was given no key: set [archive] encryption_key_file or FERRY_KEY_FILE"));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("encrypted with key ", id, ", which ", keys->origin(), " does not hold: add that key's line"));
}

}  // namespace ferry::pipeline
