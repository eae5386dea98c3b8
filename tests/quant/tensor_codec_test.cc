#include "quant/tensor_codec.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "quant/fixed_convert.h"

namespace orrery::quant {
namespace {

std::vector<float> Normal(size_t n, float sigma, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

TEST(TensorCodecTest, PayloadIsLittleEndianInt16) {
  const FixedFormat f = FixedFormat::WithFractionalBits(8);
  std::string bytes;
  EncodeFixed16(std::vector<float>{1.0f, -1.0f, 0.5f}, f, Rounding::kNearest, {}, &bytes);
  ASSERT_EQ(bytes.size(), 6u);
  const unsigned char want[] = {0x00, 0x01, 0x00, 0xFF, 0x80, 0x00};  // 256, -256, 128
  EXPECT_EQ(std::memcmp(bytes.data(), want, 6), 0);
}

TEST(TensorCodecTest, RoundTripErrorIsWithinOneEpsilonStochasticAndHalfNearest) {
  for (size_t n : {size_t{1}, size_t{2047}, size_t{2048}, size_t{5000}}) {
    const std::vector<float> x = Normal(n, 0.3f, static_cast<uint32_t>(n));
    const FixedFormat f = ChooseFormat(x);
    for (Rounding r : {Rounding::kNearest, Rounding::kStochastic}) {
      std::string bytes;
      EncodeFixed16(x, f, r, RandomStream::For(1, 1), &bytes);
      std::vector<float> back(n);
      ASSERT_TRUE(DecodeFixed16(bytes, f, back).ok());
      const double tol = r == Rounding::kNearest ? f.epsilon() / 2 : f.epsilon();
      for (size_t i = 0; i < n; ++i) ASSERT_LE(std::fabs(back[i] - x[i]), tol) << i;
    }
  }
}

TEST(TensorCodecTest, DecodeOfEncodeIsIdentityOnGridValues) {
  const FixedFormat f = FixedFormat::WithFractionalBits(11);
  std::vector<float> x;
  for (int q = -32768; q <= 32767; q += 13) x.push_back(ToFloat(static_cast<int16_t>(q), f));
  std::string bytes;
  EncodeFixed16(x, f, Rounding::kStochastic, RandomStream::For(4, 4), &bytes);
  std::vector<float> back(x.size());
  ASSERT_TRUE(DecodeFixed16(bytes, f, back).ok());
  EXPECT_EQ(back, x);
}

TEST(TensorCodecTest, EncodingMatchesQuantizeAcrossChunks) {
  const std::vector<float> x = Normal(10000, 2.0f, 8);
  const FixedFormat f = ChooseFormat(x);
  const RandomStream stream = RandomStream::For(3, 14, 2);
  std::vector<int16_t> q(x.size());
  ASSERT_TRUE(Quantize(x, f, Rounding::kStochastic, stream, q, Isa::kPortable).ok());
  std::vector<char> bytes(Fixed16EncodedSize(x.size()) + 1);
  // An odd offset checks payloads at any alignment.
  ASSERT_TRUE(EncodeFixed16(x, f, Rounding::kStochastic, stream,
                            std::span<char>(bytes.data() + 1, bytes.size() - 1))
                  .ok());
  for (size_t i = 0; i < x.size(); ++i) {
    const auto lo = static_cast<unsigned char>(bytes[1 + 2 * i]);
    const auto hi = static_cast<unsigned char>(bytes[2 + 2 * i]);
    ASSERT_EQ(static_cast<int16_t>(static_cast<uint16_t>(lo | (hi << 8))), q[i]) << i;
  }
}

TEST(TensorCodecTest, ChooseFormatFitsTheLargestMagnitude) {
  EXPECT_EQ(ChooseFormat(std::vector<float>{0.5f, -1.5f, 0.25f}).fl, 14);
  EXPECT_EQ(ChooseFormat(std::vector<float>{0.5f, -2.5f}).fl, 13);
  EXPECT_EQ(ChooseFormat(std::vector<float>{3e-4f, -1e-4f}).fl, 26);
  EXPECT_EQ(ChooseFormat(std::vector<float>{}).fl, kMaxFractionalBits);
  const std::vector<float> x = Normal(4096, 5.0f, 1);
  const FixedFormat f = ChooseFormat(x);
  std::string bytes;
  EncodeFixed16(x, f, Rounding::kNearest, {}, &bytes);
  std::vector<float> back(x.size());
  ASSERT_TRUE(DecodeFixed16(bytes, f, back).ok());
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_LE(std::fabs(back[i] - x[i]), f.epsilon() / 2) << "saturated at " << i;
  }
}

TEST(TensorCodecTest, SpecialValuesEncodeAsDefined) {
  const FixedFormat f = FixedFormat::WithFractionalBits(4);
  const float inf = std::numeric_limits<float>::infinity();
  std::string bytes;
  EncodeFixed16(std::vector<float>{std::nanf(""), inf, -inf}, f, Rounding::kStochastic,
                RandomStream::For(0, 0), &bytes);
  std::vector<float> back(3);
  ASSERT_TRUE(DecodeFixed16(bytes, f, back).ok());
  EXPECT_EQ(back[0], 0.0f);
  EXPECT_EQ(back[1], static_cast<float>(f.max_value()));
  EXPECT_EQ(back[2], static_cast<float>(f.min_value()));
}

TEST(TensorCodecTest, WrongSizesAreRejected) {
  std::vector<float> out(4, 1.0f);
  EXPECT_EQ(DecodeFixed16(std::string(7, '\0'), FixedFormat{}, out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out, std::vector<float>(4, 1.0f));
  EXPECT_EQ(DecodeFixed16(std::string(8, '\0'), FixedFormat{99}, out).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<char> small(5);
  EXPECT_EQ(
      EncodeFixed16(out, FixedFormat{}, Rounding::kNearest, {}, std::span<char>(small)).code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace orrery::quant
