// The fixed16 dense step (precision.compute: fixed16) against a scalar reference built from
// quant's own rules: operands rounded to their grids, exact integer sums, one rounding per output.
#include "learner/layers/fixed_dense_step.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "quant/fixed_format.h"
#include "quant/fixed_gemm.h"
#include "tests/learner/layers_test_harness.h"

namespace orrery::learner::testing {
namespace {

constexpr int64_t kBatch = 5;
constexpr int64_t kInputs = 37;
constexpr int64_t kUnits = 11;

struct Fixture {
  uint64_t pass = 0;
  FixedCompute fixed;
  std::unique_ptr<SingleLayer> layer;

  Fixture(Activation act, quant::Rounding rounding, int fl = 12, int activation_fl = 10) {
    fixed.options.fl = fl;
    fixed.options.activation_fl = activation_fl;
    fixed.options.rounding = rounding;
    fixed.seed = 7;
    fixed.pass = &pass;
    fixed.threads = 1;
    layer = SingleLayer::Make(Dense(kUnits, act), {Flat(kInputs)}, kBatch, 3, &fixed).value();
    FillUniform(layer->src(0), 11, -1.0f, 1.0f);
  }
};

std::vector<int16_t> Nearest(std::span<const float> v, quant::FixedFormat f) {
  std::vector<int16_t> q(v.size());
  for (size_t i = 0; i < v.size(); ++i) q[i] = quant::RoundNearest(v[i], f);
  return q;
}

TEST(FixedDenseStepTest, ForwardWithNearestEqualsExactSumsRoundedOnce) {
  Fixture t(Activation::kRelu, quant::Rounding::kNearest);
  const quant::FixedFormat a{10}, w{12};
  const auto xq = Nearest(t.layer->src(0), a);
  const auto wq = Nearest(t.layer->params().tensor("fc.weight").value(), w);
  const auto bq = Nearest(t.layer->params().tensor("fc.bias").value(), w);
  const std::vector<float> y = t.layer->Forward();
  int positive = 0;
  for (int64_t i = 0; i < kBatch; ++i) {
    for (int64_t j = 0; j < kUnits; ++j) {
      int64_t acc = int64_t{bq[j]} << a.fl;
      for (int64_t k = 0; k < kInputs; ++k) acc += int64_t{xq[i * kInputs + k]} * wq[j * kInputs + k];
      const float want =
          std::max(0.0f, quant::ToFloat(quant::RoundAccumulator(acc, w.fl, quant::Rounding::kNearest, 0), a));
      EXPECT_EQ(y[i * kUnits + j], want) << i << "," << j;
      positive += want > 0;
    }
  }
  EXPECT_GT(positive, 5) << "relu should let some outputs through";
}

TEST(FixedDenseStepTest, ForwardIsCloseToFloatAndOnTheActivationGrid) {
  for (quant::Rounding r : {quant::Rounding::kNearest, quant::Rounding::kStochastic}) {
    Fixture t(Activation::kNone, r);
    const auto x = t.layer->src(0);
    const auto wt = t.layer->params().tensor("fc.weight").value();
    const auto bias = t.layer->params().tensor("fc.bias").value();
    const std::vector<float> y = t.layer->Forward();
    for (int64_t i = 0; i < kBatch; ++i) {
      for (int64_t j = 0; j < kUnits; ++j) {
        double ref = bias[j];
        for (int64_t k = 0; k < kInputs; ++k) ref += double{x[i * kInputs + k]} * wt[j * kInputs + k];
        const float v = y[i * kUnits + j];
        EXPECT_NEAR(v, ref, 0.02) << "input rounding (eps 2^-10) over 37 terms plus one output eps";
        EXPECT_EQ(v * 1024.0f, std::round(v * 1024.0f)) << "output must lie on the <6,10> grid";
      }
    }
  }
}

TEST(FixedDenseStepTest, BackwardWithNearestEqualsExactReference) {
  Fixture t(Activation::kNone, quant::Rounding::kNearest);
  const quant::FixedFormat a{10}, w{12};
  t.layer->Forward();
  std::vector<float> e(kBatch * kUnits);
  FillUniform(e, 5, -0.05f, 0.05f);
  const auto xq = Nearest(t.layer->src(0), a);
  const auto wq = Nearest(t.layer->params().tensor("fc.weight").value(), w);
  const auto eq = Nearest(e, w);
  t.layer->Backward(e);
  const auto dw = t.layer->grads().tensor("fc.weight").value();
  const auto db = t.layer->grads().tensor("fc.bias").value();
  const auto dx = t.layer->diff_src(0);
  for (int64_t j = 0; j < kUnits; ++j) {
    for (int64_t k = 0; k < kInputs; ++k) {
      int64_t acc = 0;
      for (int64_t i = 0; i < kBatch; ++i) acc += int64_t{eq[i * kUnits + j]} * xq[i * kInputs + k];
      EXPECT_EQ(dw[j * kInputs + k],
                quant::ToFloat(quant::RoundAccumulator(acc, a.fl, quant::Rounding::kNearest, 0), w));
    }
    int64_t sum = 0;
    for (int64_t i = 0; i < kBatch; ++i) sum += eq[i * kUnits + j];
    EXPECT_EQ(db[j], quant::ToFloat(static_cast<int16_t>(sum), w));
  }
  for (int64_t i = 0; i < kBatch; ++i) {
    for (int64_t k = 0; k < kInputs; ++k) {
      int64_t acc = 0;
      for (int64_t j = 0; j < kUnits; ++j) acc += int64_t{eq[i * kUnits + j]} * wq[j * kInputs + k];
      EXPECT_EQ(dx[i * kInputs + k],
                quant::ToFloat(quant::RoundAccumulator(acc, w.fl, quant::Rounding::kNearest, 0), w));
    }
  }
}

TEST(FixedDenseStepTest, ReluBackwardMasksErrorsWhereTheOutputIsZero) {
  Fixture t(Activation::kRelu, quant::Rounding::kStochastic);
  const std::vector<float> y = t.layer->Forward();
  std::vector<float> e(y.size(), 0.01f);
  t.layer->Backward(e);
  const auto db = t.layer->grads().tensor("fc.bias").value();
  for (int64_t j = 0; j < kUnits; ++j) {
    int live = 0;
    for (int64_t i = 0; i < kBatch; ++i) live += y[i * kUnits + j] > 0;
    // 0.01 is not on the 2^-12 grid, so each live error rounds to 40 or 41 eps.
    EXPECT_GE(db[j], live * 40 / 4096.0f) << j;
    EXPECT_LE(db[j], live * 41 / 4096.0f) << j;
  }
}

TEST(FixedDenseStepTest, StochasticOutputsAreUnbiasedAcrossPasses) {
  // Nearest rounding of a value a quarter of an eps above the grid is off by eps/4 every time;
  // stochastic rounding averages out over passes (each pass draws a fresh stream).
  Fixture t(Activation::kNone, quant::Rounding::kStochastic, /*fl=*/12, /*activation_fl=*/4);
  auto weights = t.layer->params().tensor("fc.weight").value();
  auto bias = t.layer->params().tensor("fc.bias").value();
  std::fill(weights.begin(), weights.end(), 0.0f);
  std::fill(bias.begin(), bias.end(), 0.0f);
  weights[0] = 1.0f / 64;  // output (i, 0) = x[i, 0] / 64: well below the <12,4> eps of 1/16
  auto x = t.layer->src(0);
  for (int64_t i = 0; i < kBatch; ++i) x[i * kInputs] = 1.0f;  // exactly on the <12,4> grid
  constexpr int kPasses = 4000;
  double sum = 0;
  for (int p = 0; p < kPasses; ++p) {
    ++t.pass;
    sum += t.layer->Forward()[0];
  }
  EXPECT_NEAR(sum / kPasses, 1.0 / 64, 0.003) << "nearest would give 0 every time";
}

TEST(FixedDenseStepTest, SamePassGivesTheSameOutputs) {
  Fixture t(Activation::kRelu, quant::Rounding::kStochastic);
  const std::vector<float> a = t.layer->Forward();
  const std::vector<float> b = t.layer->Forward();
  ++t.pass;
  const std::vector<float> c = t.layer->Forward();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

}  // namespace
}  // namespace orrery::learner::testing
