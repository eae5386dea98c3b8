// Fixed16 master weights on a shard: updates below an epsilon survive in expectation with
// stochastic rounding and vanish with nearest; saturation is counted.
#include "server/fixed_master_weights.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace orrery::server {
namespace {

constexpr quant::FixedFormat kFormat{12};
constexpr double kEps = 1.0 / 4096;

TEST(FixedMasterWeightsTest, InitializeRoundsToNearestAndCountsSaturation) {
  FixedMasterWeights m(kFormat, quant::Rounding::kStochastic, 0);
  std::vector<float> w = {0.1f, -0.2f, 9.0f, -9.0f};
  m.Initialize(w);
  EXPECT_EQ(w[0], std::round(0.1 * 4096) / 4096);
  EXPECT_EQ(w[1], std::round(-0.2 * 4096) / 4096);
  EXPECT_EQ(w[2], 32767 / 4096.0f);
  EXPECT_EQ(w[3], -8.0f);
  EXPECT_EQ(m.saturated(), 2u);
  ASSERT_EQ(m.words().size(), 4u);
  EXPECT_EQ(m.words()[3], -32768);
}

TEST(FixedMasterWeightsTest, SubEpsilonUpdatesSurviveOnlyWithStochasticRounding) {
  for (quant::Rounding r : {quant::Rounding::kStochastic, quant::Rounding::kNearest}) {
    FixedMasterWeights m(kFormat, r, 3);
    std::vector<float> w(20000, 0.5f);
    m.Initialize(w);
    for (uint64_t version = 1; version <= 40; ++version) {
      for (float& x : w) x -= static_cast<float>(0.25 * kEps);  // one update of a quarter eps
      m.Round(w, version);
    }
    const double mean = std::accumulate(w.begin(), w.end(), 0.0) / w.size();
    if (r == quant::Rounding::kStochastic) {
      EXPECT_NEAR((0.5 - mean) / kEps, 10.0, 0.2) << "40 updates of eps/4";
    } else {
      EXPECT_EQ(mean, 0.5) << "every update was below eps/2 and was lost";
    }
    for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(w[i], m.words()[i] / 4096.0f);
  }
}

TEST(FixedMasterWeightsTest, TheSameVersionRoundsTheSameWay) {
  FixedMasterWeights a(kFormat, quant::Rounding::kStochastic, 1);
  FixedMasterWeights b(kFormat, quant::Rounding::kStochastic, 1);
  std::vector<float> wa(100, 0.3f), wb(100, 0.3f);
  a.Round(wa, 7);
  b.Round(wb, 7);
  EXPECT_EQ(wa, wb);
}

}  // namespace
}  // namespace orrery::server
