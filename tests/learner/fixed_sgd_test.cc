// Fixed16 master weights: updates below eps/2 vanish under round-to-nearest and survive in
// expectation under stochastic rounding (the effect Gupta et al. 2015 report).
#include "learner/fixed_sgd.h"

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace orrery::learner {
namespace {

constexpr quant::FixedFormat kFormat{12};  // eps = 2^-12
constexpr double kEps = 1.0 / 4096;

TEST(FixedSgdTest, CreateRoundsInitialWeightsToTheGrid) {
  std::vector<float> w = {0.1f, -0.3f, 1.0f / 8192 * 3, 100.0f};
  auto sgd = FixedSgdMomentum::Create(0.1f, 0.9f, kFormat, quant::Rounding::kStochastic, 1, w);
  ASSERT_TRUE(sgd.ok()) << sgd.status();
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(w[i] * 4096.0f, std::round(w[i] * 4096.0f)) << i;
    EXPECT_EQ(w[i], sgd->master()[i] / 4096.0f) << i;
  }
  EXPECT_EQ(w[3], 32767 / 4096.0f) << "saturates at the top of <4, 12>";
}

TEST(FixedSgdTest, UpdatesBelowHalfAnEpsilonVanishWithNearest) {
  std::vector<float> w(10000, 0.25f);
  auto sgd = FixedSgdMomentum::Create(1.0f, 0.0f, kFormat, quant::Rounding::kNearest, 1, w);
  ASSERT_TRUE(sgd.ok());
  const std::vector<float> g(w.size(), static_cast<float>(0.3 * kEps));  // lr * g = 0.3 eps
  for (int step = 0; step < 50; ++step) sgd->Apply(w, g);
  for (float v : w) ASSERT_EQ(v, 0.25f) << "50 steps of 0.3 eps, all lost";
}

TEST(FixedSgdTest, UpdatesBelowHalfAnEpsilonSurviveInExpectationWithStochastic) {
  std::vector<float> w(10000, 0.25f);
  auto sgd = FixedSgdMomentum::Create(1.0f, 0.0f, kFormat, quant::Rounding::kStochastic, 1, w);
  ASSERT_TRUE(sgd.ok());
  const std::vector<float> g(w.size(), static_cast<float>(0.3 * kEps));
  for (int step = 0; step < 50; ++step) sgd->Apply(w, g);
  const double mean = std::accumulate(w.begin(), w.end(), 0.0) / w.size();
  // Expected 0.25 - 15 eps; each weight's walk has variance 50 * 0.21 eps^2, so the mean's
  // standard error is ~0.03 eps.
  EXPECT_NEAR((0.25 - mean) / kEps, 15.0, 0.3);
  for (float v : w) ASSERT_EQ(v * 4096.0f, std::round(v * 4096.0f)) << "off the grid";
}

TEST(FixedSgdTest, MomentumAccumulatesInFloat) {
  // With momentum 0.9 the velocity grows to 10 g, so a 0.1 eps gradient eventually moves a
  // weight by about one eps per step even with nearest rounding.
  std::vector<float> w(4, 0.0f);
  auto sgd = FixedSgdMomentum::Create(1.0f, 0.9f, kFormat, quant::Rounding::kNearest, 1, w);
  ASSERT_TRUE(sgd.ok());
  const std::vector<float> g(w.size(), static_cast<float>(0.1 * kEps));
  for (int step = 0; step < 100; ++step) sgd->Apply(w, g);
  EXPECT_LT(w[0], -50 * kEps);
}

TEST(FixedSgdTest, SameSeedSameWeights) {
  std::vector<float> a(1000, 0.0f), b(1000, 0.0f), c(1000, 0.0f);
  const std::vector<float> g(1000, static_cast<float>(0.5 * kEps));
  auto sa = FixedSgdMomentum::Create(1.0f, 0.5f, kFormat, quant::Rounding::kStochastic, 4, a);
  auto sb = FixedSgdMomentum::Create(1.0f, 0.5f, kFormat, quant::Rounding::kStochastic, 4, b);
  auto sc = FixedSgdMomentum::Create(1.0f, 0.5f, kFormat, quant::Rounding::kStochastic, 5, c);
  for (int step = 0; step < 3; ++step) {
    sa->Apply(a, g);
    sb->Apply(b, g);
    sc->Apply(c, g);
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(FixedSgdTest, BadArgumentsAreRejected) {
  std::vector<float> w(3, 0.0f);
  const auto r = quant::Rounding::kStochastic;
  EXPECT_FALSE(FixedSgdMomentum::Create(0.0f, 0.9f, kFormat, r, 1, w).ok());
  EXPECT_FALSE(FixedSgdMomentum::Create(std::nanf(""), 0.9f, kFormat, r, 1, w).ok());
  EXPECT_FALSE(FixedSgdMomentum::Create(0.1f, 1.0f, kFormat, r, 1, w).ok());
  EXPECT_FALSE(FixedSgdMomentum::Create(0.1f, 0.9f, quant::FixedFormat{31}, r, 1, w).ok());
  EXPECT_FALSE(FixedSgdMomentum::Create(0.1f, 0.9f, quant::FixedFormat{-1}, r, 1, w).ok());
  w[1] = std::numeric_limits<float>::infinity();
  auto bad = FixedSgdMomentum::Create(0.1f, 0.9f, kFormat, r, 1, w);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("initial weight 1"), std::string_view::npos)
      << bad.status();
}

}  // namespace
}  // namespace orrery::learner
