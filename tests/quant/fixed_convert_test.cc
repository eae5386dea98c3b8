#include "quant/fixed_convert.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace orrery::quant {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Values spanning every interesting case: grid points, ties, tiny, huge, saturating, special.
std::vector<float> AwkwardValues(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 9);
  std::vector<float> v(n);
  for (float& x : v) {
    switch (kind(gen)) {
      case 0:
        x = normal(gen) * 1e4f;
        break;
      case 1:
        x = normal(gen) * 1e-6f;
        break;
      case 2:
        x = std::ldexp(std::round(normal(gen) * 1000.0f) + 0.5f, -10);
        break;  // ties
      case 3:
        x = (gen() % 3 == 0) ? kNaN : (gen() % 2 ? kInf : -kInf);
        break;
      case 4:
        x = std::ldexp(static_cast<float>(static_cast<int>(gen() % 65536) - 32768), -12);
        break;
      default:
        x = normal(gen) * 2.0f;
        break;
    }
  }
  return v;
}

class ConvertPathsTest : public ::testing::TestWithParam<int> {};

TEST_P(ConvertPathsTest, VectorAndPortableAreBitIdenticalToScalar) {
  if (!IsaSupported(Isa::kAvx2)) GTEST_SKIP() << "CPU lacks AVX2";
  const FixedFormat f = FixedFormat::WithFractionalBits(GetParam());
  for (size_t n :
       {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{1000}, size_t{4099}}) {
    const std::vector<float> x = AwkwardValues(n, static_cast<uint32_t>(n + 17));
    const RandomStream stream = RandomStream::For(5, 11).Advanced(3);
    for (Rounding r : {Rounding::kNearest, Rounding::kStochastic}) {
      // kAvx512 has its own stochastic kernel (16 lanes).
      std::vector<int16_t> portable(n), avx2(n), avx512(n);
      ASSERT_TRUE(Quantize(x, f, r, stream, portable, Isa::kPortable).ok());
      ASSERT_TRUE(Quantize(x, f, r, stream, avx2, Isa::kAvx2).ok());
      const bool has_avx512 = IsaSupported(Isa::kAvx512);
      if (has_avx512) ASSERT_TRUE(Quantize(x, f, r, stream, avx512, Isa::kAvx512).ok());
      for (size_t i = 0; i < n; ++i) {
        const int16_t scalar =
            r == Rounding::kNearest
                ? RoundNearest(x[i], f)
                : RoundStochastic(x[i], f, CounterRandom(stream.key, stream.offset + i));
        ASSERT_EQ(portable[i], scalar) << "i=" << i << " x=" << x[i];
        ASSERT_EQ(avx2[i], scalar) << "i=" << i << " x=" << x[i];
        if (has_avx512) ASSERT_EQ(avx512[i], scalar) << "avx512 i=" << i << " x=" << x[i];
      }
    }
    std::vector<int16_t> q(n);
    ASSERT_TRUE(Quantize(x, f, Rounding::kNearest, {}, q, Isa::kPortable).ok());
    std::vector<float> back_portable(n), back_avx2(n);
    ASSERT_TRUE(Dequantize(q, f, back_portable, Isa::kPortable).ok());
    ASSERT_TRUE(Dequantize(q, f, back_avx2, Isa::kAvx2).ok());
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(back_portable[i], ToFloat(q[i], f));
      ASSERT_EQ(back_avx2[i], ToFloat(q[i], f));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, ConvertPathsTest, ::testing::Values(0, 8, 12, 14, 16, 24, 30));

TEST(ConvertTest, ChunkedStochasticEqualsWholeWhenStreamIsAdvanced) {
  const FixedFormat f = FixedFormat::WithFractionalBits(10);
  const std::vector<float> x = AwkwardValues(1000, 3);
  const RandomStream stream = RandomStream::For(1, 2);
  std::vector<int16_t> whole(x.size()), pieces(x.size());
  ASSERT_TRUE(Quantize(x, f, Rounding::kStochastic, stream, whole).ok());
  for (size_t start : {size_t{0}, size_t{333}, size_t{777}}) {
    const size_t end = start == 777 ? x.size() : start + (start == 0 ? 333 : 444);
    ASSERT_TRUE(Quantize(std::span(x).subspan(start, end - start), f, Rounding::kStochastic,
                         stream.Advanced(start), std::span(pieces).subspan(start, end - start))
                    .ok());
  }
  EXPECT_EQ(whole, pieces);
}

TEST(ConvertTest, CounterCrossingA32BitBlockMatchesScalar) {
  const FixedFormat f = FixedFormat::WithFractionalBits(10);
  const std::vector<float> x = AwkwardValues(100, 4);
  const RandomStream stream{77, (uint64_t{1} << 32) - 40};
  for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512}) {
    if (!IsaSupported(isa)) continue;
    std::vector<int16_t> q(x.size());
    ASSERT_TRUE(Quantize(x, f, Rounding::kStochastic, stream, q, isa).ok());
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(q[i], RoundStochastic(x[i], f, CounterRandom(77, stream.offset + i))) << i;
    }
  }
}

TEST(ConvertTest, VectorStochasticMeanIsUnbiased) {
  const FixedFormat f = FixedFormat::WithFractionalBits(6);
  const float x = static_cast<float>(0.2 * f.epsilon());
  std::vector<float> in(1 << 18, x);
  std::vector<int16_t> q(in.size());
  ASSERT_TRUE(Quantize(in, f, Rounding::kStochastic, RandomStream::For(0, 0), q).ok());
  double sum = 0;
  for (int16_t v : q) sum += ToFloat(v, f);
  EXPECT_NEAR(sum / in.size(), x, 5 * f.epsilon() / (2 * std::sqrt(in.size())));
  ASSERT_TRUE(Quantize(in, f, Rounding::kNearest, {}, q).ok());
  for (int16_t v : q) ASSERT_EQ(v, 0);
}

TEST(ConvertTest, MismatchedLengthsAreRejected) {
  std::vector<float> x(4);
  std::vector<int16_t> q(3);
  EXPECT_EQ(Quantize(x, FixedFormat{}, Rounding::kNearest, {}, q).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> back(5);
  EXPECT_EQ(Dequantize(q, FixedFormat{}, back).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConvertTest, MaxAbsIgnoresNaN) {
  EXPECT_EQ(MaxAbs(std::vector<float>{}), 0.0f);
  EXPECT_EQ(MaxAbs(std::vector<float>{1.0f, kNaN, -3.0f, 2.0f}), 3.0f);
  EXPECT_EQ(MaxAbs(std::vector<float>{1.0f, -kInf}), kInf);
}

}  // namespace
}  // namespace orrery::quant
