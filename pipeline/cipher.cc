#include "pipeline/cipher.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ferry::pipeline {
namespace {

constexpr size_t kKeyBytes = 32;
constexpr char kSubkeyInfo[] = "ferry aes-256-gcm seal";
constexpr char kCheckText[] = "ferry key check";

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

// A 32-byte key that wipes itself.
struct Subkey {
  std::array<unsigned char, kKeyBytes> bytes{};
  ~Subkey() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

bool IsHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// OpenSSL failing with a valid key and buffers: its random source or AES-256-GCM is not
// available (the library's setup), or it ran out of memory. Not a bug in ferry, and not
// transient enough to retry.
absl::Status OpensslError(absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat("AES-256-GCM ", what, " failed (OpenSSL)"));
}

// HKDF-SHA256 (RFC 5869) with one output block: extract with `salt`, expand with kSubkeyInfo.
bool DeriveSubkey(const std::string& key, const unsigned char* salt, Subkey* out) {
  Subkey prk;
  unsigned int n = 0;
  if (HMAC(EVP_sha256(), salt, kSealSaltBytes, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
           prk.bytes.data(), &n) == nullptr ||
      n != kKeyBytes) {
    return false;
  }
  unsigned char info[sizeof(kSubkeyInfo)];  // the text without its NUL, then the counter 0x01
  std::memcpy(info, kSubkeyInfo, sizeof(kSubkeyInfo) - 1);
  info[sizeof(kSubkeyInfo) - 1] = 1;
  return HMAC(EVP_sha256(), prk.bytes.data(), kKeyBytes, info, sizeof(info), out->bytes.data(), &n) != nullptr &&
         n == kKeyBytes;
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
    if (ring->keys_.count(static_cast<uint16_t>(id)) > 0) return bad(absl::StrCat("key id ", id, " appears twice"));
    ring->keys_[static_cast<uint16_t>(id)] = absl::HexStringToBytes(parts[1]);
  }
  if (ring->keys_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(ring->origin_, ": no key in the key file"));
  }
  return std::shared_ptr<const Keyring>(std::move(ring));
}

std::vector<uint16_t> Keyring::ids() const {
  std::vector<uint16_t> out;
  for (const auto& [id, key] : keys_) out.push_back(id);
  return out;
}

std::string Keyring::CheckValue(uint16_t id) const {
  auto key = keys_.find(id);
  if (key == keys_.end()) return "";
  unsigned char mac[32];
  unsigned int n = 0;
  if (HMAC(EVP_sha256(), key->second.data(), static_cast<int>(key->second.size()),
           reinterpret_cast<const unsigned char*>(kCheckText), sizeof(kCheckText) - 1, mac, &n) == nullptr) {
    return "";
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(mac), 8));
}

absl::Status Keyring::Seal(uint16_t id, absl::string_view aad, absl::string_view plain, std::string* out) const {
  auto key = keys_.find(id);
  if (key == keys_.end()) return MissingKeyError(id, this);
  const size_t at = out->size();
  out->resize(at + kSealOverhead + plain.size());
  auto* salt = reinterpret_cast<unsigned char*>(out->data() + at);
  auto* nonce = salt + kSealSaltBytes;
  auto* ct = nonce + kSealNonceBytes;
  Subkey subkey;
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (RAND_bytes(salt, kSealSaltBytes + kSealNonceBytes) != 1 || !DeriveSubkey(key->second, salt, &subkey) || !ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, subkey.bytes.data(), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), ct, &n, reinterpret_cast<const unsigned char*>(plain.data()),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), ct + n, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kSealTagBytes, ct + plain.size()) != 1) {
    OPENSSL_cleanse(out->data() + at, out->size() - at);
    out->resize(at);
    return OpensslError("encryption");
  }
  return absl::OkStatus();
}

absl::Status Keyring::Open(uint16_t id, absl::string_view aad, absl::string_view sealed, std::string* out) const {
  out->clear();
  auto key = keys_.find(id);
  if (key == keys_.end()) return MissingKeyError(id, this);
  if (sealed.size() < kSealOverhead) return absl::DataLossError("sealed bytes shorter than salt, nonce and tag");
  const size_t len = sealed.size() - kSealOverhead;
  const auto* salt = reinterpret_cast<const unsigned char*>(sealed.data());
  const auto* nonce = salt + kSealSaltBytes;
  const auto* ct = nonce + kSealNonceBytes;
  unsigned char tag[kSealTagBytes];
  std::memcpy(tag, ct + len, sizeof(tag));
  Subkey subkey;
  Ctx ctx(EVP_CIPHER_CTX_new());
  out->resize(len);
  auto* pt = reinterpret_cast<unsigned char*>(out->data());
  int n = 0;
  // The tag is set before any decryption, and nothing decrypted survives a failure.
  const bool ok =
      DeriveSubkey(key->second, salt, &subkey) && ctx &&
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, subkey.bytes.data(), nonce) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kSealTagBytes, tag) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx.get(), pt, &n, ct, static_cast<int>(len)) == 1 && EVP_DecryptFinal_ex(ctx.get(), pt + n, &n) == 1;
  if (!ok) {
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
