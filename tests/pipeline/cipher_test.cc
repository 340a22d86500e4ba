// Encryption at rest: the key file format, AES-256-GCM sealing, and sealed frames: they round
// trip with the key, fail clearly without it, and no byte (header or payload) can change
// unnoticed, even by someone who recomputes the checksums.
#include "pipeline/cipher.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "pipeline/endian.h"
#include "pipeline/frame.h"

namespace ferry::pipeline {
namespace {

constexpr char kKey1[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
constexpr char kKey2[] = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

std::shared_ptr<const Keyring> Ring(const std::string& text) {
  auto ring = Keyring::Parse(text, "test.keys");
  EXPECT_TRUE(ring.ok()) << ring.status();
  return ring.ok() ? *ring : nullptr;
}

TEST(KeyringTest, ParsesKeysCommentsAndPicksTheHighestIdToSeal) {
  auto ring = Ring(absl::StrCat("# rotated 2026-11\n1 ", kKey1, "\n\n  7\t", kKey2, "  # current\n"));
  ASSERT_NE(ring, nullptr);
  EXPECT_EQ(ring->current_id(), 7);
  EXPECT_TRUE(ring->Has(1));
  EXPECT_FALSE(ring->Has(2));
}

TEST(KeyringTest, BadKeyFilesAreRefusedNamingTheLine) {
  for (const std::string& text : {std::string(""), std::string("# only a comment\n"),
                                  absl::StrCat("1 ", std::string(kKey1).substr(2)),     // 62 digits
                                  absl::StrCat("1 ", std::string(kKey1, 63), "g"),      // not hex
                                  absl::StrCat("0 ", kKey1), absl::StrCat("65536 ", kKey1),
                                  absl::StrCat("x ", kKey1), absl::StrCat("1 ", kKey1, " extra"),
                                  absl::StrCat("1 ", kKey1, "\n1 ", kKey2)}) {
    auto ring = Keyring::Parse(text, "test.keys");
    ASSERT_FALSE(ring.ok()) << text;
    EXPECT_EQ(ring.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(ring.status().message(), "test.keys")) << ring.status();
  }
}

TEST(KeyringTest, SealOpensOnlyWithTheSameKeyAndAad) {
  auto ring = Ring(absl::StrCat("1 ", kKey1, "\n2 ", kKey2));
  std::string a, b, plain;
  ASSERT_TRUE(ring->Seal(2, "aad", "secret bytes", &a).ok());
  ASSERT_TRUE(ring->Seal(2, "aad", "secret bytes", &b).ok());
  EXPECT_EQ(a.size(), 12 + kSealOverhead);
  EXPECT_NE(a, b) << "every seal draws a fresh nonce";
  EXPECT_EQ(a.find("secret"), std::string::npos);
  ASSERT_TRUE(ring->Open(2, "aad", a, &plain).ok());
  EXPECT_EQ(plain, "secret bytes");
  EXPECT_EQ(ring->Open(1, "aad", a, &plain).code(), absl::StatusCode::kDataLoss) << "wrong key";
  EXPECT_EQ(ring->Open(2, "aaD", a, &plain).code(), absl::StatusCode::kDataLoss) << "other aad";
  EXPECT_EQ(ring->Open(3, "aad", a, &plain).code(), absl::StatusCode::kFailedPrecondition);
  for (size_t i = 0; i < a.size(); ++i) {
    std::string bad = a;
    bad[i] ^= 0x40;
    EXPECT_EQ(ring->Open(2, "aad", bad, &plain).code(), absl::StatusCode::kDataLoss) << "byte " << i;
  }
}

TEST(KeyringTest, CheckValuesTellKeysApartAndFailedOpensHandNothingOut) {
  auto a = Ring(absl::StrCat("1 ", kKey1));
  auto b = Ring(absl::StrCat("1 ", kKey2));
  EXPECT_EQ(a->CheckValue(1).size(), 16u);
  EXPECT_EQ(a->CheckValue(1), Ring(absl::StrCat("1 ", kKey1))->CheckValue(1));
  EXPECT_NE(a->CheckValue(1), b->CheckValue(1));
  EXPECT_EQ(a->CheckValue(1).find(std::string(kKey1).substr(0, 8)), std::string::npos);
  std::string sealed, out = "stale";
  ASSERT_TRUE(a->Seal(1, "", std::string(1000, 'p'), &sealed).ok());
  EXPECT_FALSE(b->Open(1, "", sealed, &out).ok());
  EXPECT_TRUE(out.empty()) << "unauthenticated bytes were handed out";
}

std::vector<Record> Records() {
  std::vector<Record> records;
  uint64_t pos = 0;
  for (int i = 0; i < 4; ++i) {
    Record r;
    r.payload = absl::StrCat("INSERT INTO accounts VALUES (", i, ", 'plaintext row')");
    pos += r.payload.size();
    r.end_pos = pos;
    records.push_back(std::move(r));
  }
  return records;
}

// Rewrites a frame's checksums as an attacker without the key could.
void Rechecksum(std::string* frame) {
  const uint32_t stored_len = GetLe32(frame->data() + 16);
  PutLe64(frame->data() + 64, Checksum64(absl::string_view(*frame).substr(kFrameHeaderSize, stored_len)));
  PutLe64(frame->data() + 72, Checksum64(absl::string_view(frame->data(), 72)));
}

class SealedFrameTest : public ::testing::TestWithParam<int> {};

TEST_P(SealedFrameTest, RoundTripsWithTheKeyAndFailsClearlyWithout) {
  auto ring = Ring(absl::StrCat("3 ", kKey1));
  const std::vector<Record> records = Records();
  std::string out;
  auto h = EncodeFrame(FrameInput{1, 0, 9, records}, GetParam(), &out, ring.get());
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->key_id, 3);
  EXPECT_EQ(out.find("plaintext row"), std::string::npos);
  auto d = DecodeFrameHeader(out);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->key_id, 3);
  EXPECT_EQ(static_cast<uint8_t>(out[5]), 1) << "flags bit 0";
  std::string scratch;
  const absl::string_view stored = absl::string_view(out).substr(kFrameHeaderSize);
  auto views = DecodeFramePayload(*d, stored, &scratch, ring.get());
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ((*views)[i].payload, records[i].payload);

  auto none = DecodeFramePayload(*d, stored, &scratch, nullptr);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(none.status().message(), "FERRY_KEY_FILE")) << none.status();
  auto other = DecodeFramePayload(*d, stored, &scratch, Ring(absl::StrCat("1 ", kKey1)).get());
  EXPECT_TRUE(absl::StrContains(other.status().message(), "key 3")) << other.status();
  auto wrong = DecodeFramePayload(*d, stored, &scratch, Ring(absl::StrCat("3 ", kKey2)).get());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kDataLoss);
}

TEST_P(SealedFrameTest, NoByteChangesUnnoticedEvenWithRecomputedChecksums) {
  auto ring = Ring(absl::StrCat("3 ", kKey1));
  std::string out;
  ASSERT_TRUE(EncodeFrame(FrameInput{1, 0, 9, Records()}, GetParam(), &out, ring.get()).ok());
  // Every byte but the two checksums (64..79), which are recomputed.
  for (size_t i = 0; i < out.size(); ++i) {
    if (i >= 64 && i < kFrameHeaderSize) continue;
    std::string bad = out;
    bad[i] ^= 0x01;
    Rechecksum(&bad);
    auto d = DecodeFrameHeader(bad);
    if (!d.ok()) continue;  // a header field out of range, or flags contradicting the key id
    std::string scratch;
    auto views = DecodeFramePayload(*d, absl::string_view(bad).substr(kFrameHeaderSize), &scratch, ring.get());
    EXPECT_FALSE(views.ok()) << "flip at byte " << i << " went unnoticed";
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, SealedFrameTest, ::testing::Values(0, 1));

}  // namespace
}  // namespace ferry::pipeline
