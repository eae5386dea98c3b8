// Analytic gradients of every layer and of the loss against central finite differences.
// For a layer, the scalar checked is L = sum(dst * R) for a fixed random R, evaluated in double
// from the float forward outputs; d L/d dst = R is what Backward receives.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "learner/layers/softmax_cross_entropy.h"
#include "learner/model.h"
#include "tests/learner/layers_test_harness.h"

namespace orrery::learner::testing {
namespace {

constexpr double kAbsTol = 2e-3;
constexpr double kRelTol = 1e-2;

// 0 below the relu kink, 2 at or above relu6's clip, 1 between: a change means a kink was
// crossed and the finite difference there is meaningless.
std::vector<int8_t> Regions(const std::vector<float>& y) {
  std::vector<int8_t> r(y.size());
  for (size_t i = 0; i < y.size(); ++i) r[i] = y[i] <= 0 ? 0 : (y[i] >= 6 ? 2 : 1);
  return r;
}

double Objective(const std::vector<float>& y, const std::vector<float>& r) {
  double l = 0;
  for (size_t i = 0; i < y.size(); ++i) l += static_cast<double>(y[i]) * r[i];
  return l;
}

// Up to `max` coordinates of a tensor of `size` elements, chosen with a fixed seed.
std::vector<size_t> Coordinates(size_t size, size_t max, uint64_t seed) {
  std::vector<size_t> idx(size);
  std::iota(idx.begin(), idx.end(), 0);
  std::shuffle(idx.begin(), idx.end(), std::mt19937_64(seed));
  idx.resize(std::min(size, max));
  return idx;
}

struct CheckOptions {
  double h = 1e-2;
  bool kinked = false;  // skip coordinates whose perturbation crosses a relu/relu6 kink
};

// Compares every input's and every parameter's analytic gradient with central differences.
void CheckGradients(SingleLayer& t, int num_inputs, const CheckOptions& opt) {
  const std::vector<float> base = t.Forward();
  std::vector<float> r(base.size());
  FillUniform(r, 99);
  t.Backward(r);
  const std::vector<int8_t> base_regions = Regions(base);

  struct Target {
    std::string name;
    std::span<float> values;
    std::vector<float> analytic;
  };
  std::vector<Target> targets;
  for (int k = 0; k < num_inputs; ++k) {
    auto d = t.diff_src(k);
    targets.push_back({absl::StrCat("input ", k), t.src(k), {d.begin(), d.end()}});
  }
  for (const TensorInfo& info : t.params().infos()) {
    auto d = t.grads().tensor(info.name).value();
    targets.push_back({info.name, t.params().tensor(info.name).value(), {d.begin(), d.end()}});
  }
  int checked = 0;
  for (Target& target : targets) {
    for (size_t j : Coordinates(target.values.size(), 60, 5)) {
      const float saved = target.values[j];
      target.values[j] = saved + static_cast<float>(opt.h);
      const std::vector<float> plus = t.Forward();
      target.values[j] = saved - static_cast<float>(opt.h);
      const std::vector<float> minus = t.Forward();
      target.values[j] = saved;
      if (opt.kinked && (Regions(plus) != base_regions || Regions(minus) != base_regions)) {
        continue;
      }
      const double numeric = (Objective(plus, r) - Objective(minus, r)) / (2 * opt.h);
      const double analytic = target.analytic[j];
      EXPECT_NEAR(analytic, numeric,
                  kAbsTol + kRelTol * std::max(std::abs(analytic), std::abs(numeric)))
          << target.name << "[" << j << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
}

// Inputs away from the kinks at 0 and 6, so a perturbation of h cannot cross them.
void FillAwayFromKinks(std::span<float> v, uint64_t seed) {
  FillUniform(v, seed, -2, 8);
  for (float& x : v) {
    for (float kink : {0.0f, 6.0f}) {
      if (std::abs(x - kink) < 0.1f) x = kink + (x < kink ? -0.1f : 0.1f);
    }
  }
}

// Distinct values at least 0.02 apart, so max pooling's argmax is stable under small h.
void FillDistinct(std::span<float> v, uint64_t seed) {
  std::vector<int> perm(v.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(seed));
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.02f * (perm[i] - static_cast<float>(v.size()) / 2);
}

struct ConvCase {
  int n, c, h, w, filters, kernel, stride, padding, groups;
  Activation act;
};

class ConvGradientTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvGradientTest, MatchesFiniteDifferences) {
  const ConvCase p = GetParam();
  auto t = SingleLayer::Make(Conv(p.filters, p.kernel, p.stride, p.padding, p.groups, p.act),
                             {Chw(p.c, p.h, p.w)}, p.n, 3).value();
  FillUniform(t->src(0), 8);
  CheckGradients(*t, 1, {.h = 1e-2, .kinked = p.act != Activation::kNone});
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvGradientTest,
    ::testing::Values(ConvCase{2, 2, 6, 6, 3, 3, 1, 0, 1, Activation::kNone},
                      ConvCase{2, 3, 7, 7, 4, 3, 2, 1, 1, Activation::kNone},   // stride 2, pad
                      ConvCase{2, 4, 6, 6, 4, 3, 1, 1, 4, Activation::kNone},   // depthwise
                      ConvCase{2, 4, 7, 7, 8, 3, 2, 1, 4, Activation::kRelu6},  // dw x2, stride 2
                      ConvCase{2, 4, 5, 5, 6, 3, 1, 1, 2, Activation::kRelu},   // groups 2
                      ConvCase{1, 3, 8, 8, 5, 5, 1, 2, 1, Activation::kRelu},
                      ConvCase{3, 6, 4, 4, 3, 1, 1, 0, 1, Activation::kRelu6}));

TEST(DenseGradientTest, MatchesFiniteDifferences) {
  for (const Shape& in : {Flat(12), Chw(2, 3, 3)}) {
    for (Activation act : {Activation::kNone, Activation::kRelu, Activation::kRelu6}) {
      SCOPED_TRACE(absl::StrCat(in.ToString(), " activation ", static_cast<int>(act)));
      auto t = SingleLayer::Make(Dense(5, act), {in}, 3, 4).value();
      FillUniform(t->src(0), 2, -3, 3);
      CheckGradients(*t, 1, {.h = 1e-2, .kinked = act != Activation::kNone});
    }
  }
}

TEST(EltwiseGradientTest, ReluAndRelu6MatchFiniteDifferencesAwayFromKinks) {
  for (LayerKind kind : {LayerKind::kRelu, LayerKind::kRelu6}) {
    auto t = SingleLayer::Make(Simple(kind), {Chw(3, 4, 4)}, 2, 1).value();
    FillAwayFromKinks(t->src(0), 6);
    CheckGradients(*t, 1, {.h = 1e-2});
  }
}

struct PoolCase {
  LayerKind kind;
  int c, h, w, kernel, stride, padding;
};

class PoolGradientTest : public ::testing::TestWithParam<PoolCase> {};

TEST_P(PoolGradientTest, MatchesFiniteDifferences) {
  const PoolCase p = GetParam();
  auto t = SingleLayer::Make(Simple(p.kind, p.kernel, p.stride, p.padding),
                             {Chw(p.c, p.h, p.w)}, 2, 1).value();
  FillDistinct(t->src(0), 12);
  CheckGradients(*t, 1, {.h = 1e-3});
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PoolGradientTest,
    ::testing::Values(PoolCase{LayerKind::kMaxPool, 2, 6, 6, 2, 2, 0},
                      PoolCase{LayerKind::kMaxPool, 2, 7, 7, 3, 2, 1},  // overlapping, padded
                      PoolCase{LayerKind::kAvgPool, 2, 6, 6, 2, 2, 0},
                      PoolCase{LayerKind::kAvgPool, 2, 7, 5, 3, 2, 1},  // padding excluded
                      PoolCase{LayerKind::kGlobalAvgPool, 3, 5, 5, 0, 1, 0}));

TEST(AddGradientTest, BothInputsReceiveTheOutputGradient) {
  auto t = SingleLayer::Make(Simple(LayerKind::kAdd), {Chw(3, 4, 4), Chw(3, 4, 4)}, 2, 1).value();
  FillUniform(t->src(0), 1);
  FillUniform(t->src(1), 2);
  CheckGradients(*t, 2, {.h = 1e-2});
}

TEST(FlattenGradientTest, PassesTheGradientThrough) {
  auto t = SingleLayer::Make(Simple(LayerKind::kFlatten), {Chw(2, 3, 3)}, 2, 1).value();
  FillUniform(t->src(0), 1);
  CheckGradients(*t, 1, {.h = 1e-2});
}

TEST(SoftmaxCrossEntropyGradientTest, MatchesFiniteDifferences) {
  const int n = 4, classes = 10;
  std::vector<float> logits(n * classes), diff(n * classes);
  FillUniform(logits, 3, -3, 3);
  const std::vector<int32_t> labels{0, 3, 9, 3};
  const LossSum base = SoftmaxCrossEntropy(logits, labels, classes, diff);
  EXPECT_GT(base.loss_sum, 0);
  const double h = 1e-3;
  for (size_t j = 0; j < logits.size(); ++j) {
    const float saved = logits[j];
    logits[j] = saved + static_cast<float>(h);
    const double plus = SoftmaxCrossEntropy(logits, labels, classes, {}).loss_sum / n;
    logits[j] = saved - static_cast<float>(h);
    const double minus = SoftmaxCrossEntropy(logits, labels, classes, {}).loss_sum / n;
    logits[j] = saved;
    EXPECT_NEAR(diff[j], (plus - minus) / (2 * h), 1e-4) << j;
  }
}

// A whole model whose DAG has a node read by two layers (a residual), so its gradient is the
// sum of both paths; the loss is the model's mean softmax cross-entropy.
TEST(ModelGradientTest, ResidualModelMatchesFiniteDifferences) {
  ModelSpec spec;
  spec.name = "residual";
  spec.input_channels = 2;
  spec.input_height = 6;
  spec.input_width = 6;
  spec.classes = 3;
  LayerSpec a = Conv(4, 3, 1, 1, 1);
  a.name = "a";
  LayerSpec b = Conv(4, 3, 1, 1, 4);
  b.name = "b";
  LayerSpec add = Simple(LayerKind::kAdd);
  add.name = "add";
  add.inputs = {"a", "b"};
  LayerSpec pool = Simple(LayerKind::kAvgPool, 2, 2, 0);
  pool.name = "pool";
  LayerSpec fc = Dense(3);
  fc.inputs = {"pool"};
  spec.layers = {a, b, add, pool, fc};
  auto model = Model::Create(spec, 21).value();
  const int n = 3;
  std::vector<float> images(n * model->input_size());
  FillUniform(images, 4);
  const std::vector<int32_t> labels{0, 2, 1};
  ASSERT_TRUE(model->TrainStep(images, labels).ok());
  const std::vector<float> analytic(model->grads().flat().begin(), model->grads().flat().end());
  auto loss = [&] { return model->Evaluate(images, labels, n).value().loss_sum / n; };
  std::span<float> params = model->params().flat();
  const double h = 1e-2;
  for (size_t j : Coordinates(params.size(), 150, 3)) {
    const float saved = params[j];
    params[j] = saved + static_cast<float>(h);
    const double plus = loss();
    params[j] = saved - static_cast<float>(h);
    const double minus = loss();
    params[j] = saved;
    const double numeric = (plus - minus) / (2 * h);
    EXPECT_NEAR(analytic[j], numeric,
                1e-4 + kRelTol * std::max<double>(std::abs(analytic[j]), std::abs(numeric)))
        << j;
  }
}

}  // namespace
}  // namespace orrery::learner::testing
