#include "quant/fixed_format.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "gtest/gtest.h"
#include "quant/counter_rng.h"

namespace orrery::quant {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(FixedFormatTest, CreateRequiresWordLengthSixteen) {
  EXPECT_FALSE(FixedFormat::Create(4, 11).ok());
  EXPECT_FALSE(FixedFormat::Create(17, -1).ok());
  absl::StatusOr<FixedFormat> f = FixedFormat::Create(2, 14);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->fl, 14);
  EXPECT_EQ(f->il(), 2);
  EXPECT_DOUBLE_EQ(f->epsilon(), std::ldexp(1.0, -14));
  EXPECT_DOUBLE_EQ(f->min_value(), -2.0);
  EXPECT_DOUBLE_EQ(f->max_value(), 2.0 - std::ldexp(1.0, -14));
}

TEST(FixedFormatTest, NearestSaturatesAtBothEnds) {
  const FixedFormat f = FixedFormat::WithFractionalBits(14);  // range [-2, 2 - eps]
  EXPECT_EQ(RoundNearest(1e6f, f), 32767);
  EXPECT_EQ(RoundNearest(2.0f, f), 32767);
  EXPECT_EQ(RoundNearest(-2.0f, f), -32768);
  EXPECT_EQ(RoundNearest(-2.5f, f), -32768);
  EXPECT_EQ(RoundNearest(-1e30f, f), -32768);
  EXPECT_EQ(RoundNearest(1.5f, f), 24576);
}

TEST(FixedFormatTest, StochasticSaturatesAtBothEnds) {
  const FixedFormat f = FixedFormat::WithFractionalBits(14);
  for (uint32_t r : {0u, 1u << 31, 0xFFFFFFFFu}) {
    EXPECT_EQ(RoundStochastic(7.3f, f, r), 32767);
    EXPECT_EQ(RoundStochastic(-7.3f, f, r), -32768);
  }
  // Just below the top: rounding up would pass 32767, so it saturates there.
  EXPECT_EQ(RoundStochastic(static_cast<float>(32767.5 / 16384.0), f, 0), 32767);
}

TEST(FixedFormatTest, NaNIsZeroAndInfinitySaturates) {
  const FixedFormat f = FixedFormat::WithFractionalBits(8);
  EXPECT_EQ(RoundNearest(kNaN, f), 0);
  EXPECT_EQ(RoundStochastic(kNaN, f, 0), 0);
  EXPECT_EQ(RoundNearest(kInf, f), 32767);
  EXPECT_EQ(RoundNearest(-kInf, f), -32768);
  EXPECT_EQ(RoundStochastic(kInf, f, 0), 32767);
  EXPECT_EQ(RoundStochastic(-kInf, f, 0xFFFFFFFFu), -32768);
}

TEST(FixedFormatTest, NearestTiesGoToEven) {
  const FixedFormat f = FixedFormat::WithFractionalBits(0);
  EXPECT_EQ(RoundNearest(0.5f, f), 0);
  EXPECT_EQ(RoundNearest(1.5f, f), 2);
  EXPECT_EQ(RoundNearest(2.5f, f), 2);
  EXPECT_EQ(RoundNearest(-0.5f, f), 0);
  EXPECT_EQ(RoundNearest(-1.5f, f), -2);
  EXPECT_EQ(RoundNearest(2.51f, f), 3);
}

TEST(FixedFormatTest, GridValuesRoundTripExactly) {
  const FixedFormat f = FixedFormat::WithFractionalBits(12);
  for (int q = -32768; q <= 32767; q += 77) {
    const float x = ToFloat(static_cast<int16_t>(q), f);
    EXPECT_EQ(RoundNearest(x, f), q);
    EXPECT_EQ(RoundStochastic(x, f, 0xFFFFFFFFu), q);
  }
}

TEST(FixedFormatTest, StochasticMeanConvergesWhileNearestIsBiasedBelowHalfEpsilon) {
  const FixedFormat f = FixedFormat::WithFractionalBits(8);
  const double eps = f.epsilon();
  constexpr int kDraws = 200000;
  for (double x : {0.3 * eps, -0.3 * eps, 0.01 * eps, 1.7 * eps, -5.25 * eps, 0.123456}) {
    const float xf = static_cast<float>(x);
    double sum = 0;
    for (int i = 0; i < kDraws; ++i) {
      sum += ToFloat(RoundStochastic(xf, f, CounterRandom(42, static_cast<uint64_t>(i))), f);
    }
    const double mean = sum / kDraws;
    // The standard error of the mean is at most eps / (2 sqrt(kDraws)); allow 5 of them.
    EXPECT_NEAR(mean, xf, 5 * eps / (2 * std::sqrt(kDraws))) << "x = " << x;
  }
  // Below eps / 2 nearest rounding loses the value entirely.
  EXPECT_EQ(RoundNearest(static_cast<float>(0.3 * eps), f), 0);
  EXPECT_EQ(RoundNearest(static_cast<float>(-0.49 * eps), f), 0);
}

TEST(FixedFormatTest, StochasticRoundsUpWithProbabilityOfTheFraction) {
  const FixedFormat f = FixedFormat::WithFractionalBits(0);
  // 2.25: up iff (r >> 8) * 2^-24 < 0.25, i.e. r < 2^30.
  EXPECT_EQ(RoundStochastic(2.25f, f, (1u << 30) - 1), 3);
  EXPECT_EQ(RoundStochastic(2.25f, f, 1u << 30), 2);
  EXPECT_EQ(RoundStochastic(-2.25f, f, 0), -2);            // floor is -3, frac 0.75
  EXPECT_EQ(RoundStochastic(-2.25f, f, 0xC0000000u), -3);  // u = 0.75 is not < 0.75
}

TEST(FixedFormatTest, ChooseFractionalBitsPicksLargestFittingFl) {
  EXPECT_EQ(ChooseFractionalBits(0.0f), kMaxFractionalBits);
  EXPECT_EQ(ChooseFractionalBits(kNaN), kMaxFractionalBits);
  EXPECT_EQ(ChooseFractionalBits(kInf), 0);
  EXPECT_EQ(ChooseFractionalBits(1e9f), 0);
  EXPECT_EQ(ChooseFractionalBits(1.0f), 14);    // 2^14 <= 32767 < 2^15
  EXPECT_EQ(ChooseFractionalBits(1.999f), 14);  // 1.999 * 2^14 = 32751
  EXPECT_EQ(ChooseFractionalBits(2.0f), 13);
  EXPECT_EQ(ChooseFractionalBits(0.01f), 21);
  for (float m : {0.003f, 0.7f, 3.0f, 100.0f, 31000.0f}) {
    const int fl = ChooseFractionalBits(m);
    EXPECT_LE(std::ldexp(static_cast<double>(m), fl), 32767.0);
    if (fl < kMaxFractionalBits) {
      EXPECT_GT(std::ldexp(static_cast<double>(m), fl + 1), 32767.0);
    }
  }
}

TEST(CounterRngTest, StreamsAreReproducibleAndDistinct) {
  EXPECT_EQ(RandomStream::For(3, 7).key, RandomStream::For(3, 7).key);
  EXPECT_NE(RandomStream::For(3, 7).key, RandomStream::For(3, 8).key);
  EXPECT_NE(RandomStream::For(3, 7).key, RandomStream::For(4, 7).key);
  EXPECT_NE(RandomStream::For(3, 7, 0).key, RandomStream::For(3, 7, 1).key);
  EXPECT_NE(CounterRandom(1, 5), CounterRandom(1, 6));
  EXPECT_NE(CounterRandom(1, 5), CounterRandom(1, 5 + (uint64_t{1} << 32)));
}

TEST(CounterRngTest, DrawsLookUniform) {
  constexpr int kBins = 16, kDraws = 160000;
  int counts[kBins] = {};
  for (int i = 0; i < kDraws; ++i) ++counts[CounterRandom(99, static_cast<uint64_t>(i)) >> 28];
  for (int c : counts) EXPECT_NEAR(c, kDraws / kBins, 500);  // ~5 sigma
}

}  // namespace
}  // namespace orrery::quant
