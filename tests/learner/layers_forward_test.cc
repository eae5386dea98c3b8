// Forward results of every layer against naive loop implementations on random inputs.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "tests/learner/layers_test_harness.h"

namespace orrery::learner::testing {
namespace {

double Act(double x, Activation a) {
  if (a == Activation::kRelu) return std::max(0.0, x);
  if (a == Activation::kRelu6) return std::min(6.0, std::max(0.0, x));
  return x;
}

void ExpectNear(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::abs(want[i]))) << "at " << i;
  }
}

struct ConvCase {
  int n, c, h, w, filters, kernel, stride, padding, groups;
  Activation act;
  bool bias;
};

class ConvForwardTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvForwardTest, MatchesNaiveConvolution) {
  const ConvCase p = GetParam();
  auto t = SingleLayer::Make(Conv(p.filters, p.kernel, p.stride, p.padding, p.groups, p.act,
                                  p.bias),
                             {Chw(p.c, p.h, p.w)}, p.n, 7).value();
  FillUniform(t->src(0), 11, -2, 2);
  const std::vector<float> got = t->Forward();
  const Shape out = t->layer().output_shape();
  ASSERT_EQ(out.h, (p.h + 2 * p.padding - p.kernel) / p.stride + 1);
  auto w = t->params().tensor("conv.weight").value();
  std::span<float> bias;
  if (p.bias) bias = t->params().tensor("conv.bias").value();
  const auto x = t->src(0);
  const int icg = p.c / p.groups, ocg = p.filters / p.groups;
  std::vector<double> want(got.size());
  for (int n = 0; n < p.n; ++n)
    for (int o = 0; o < p.filters; ++o)
      for (int oy = 0; oy < out.h; ++oy)
        for (int ox = 0; ox < out.w; ++ox) {
          const int g = o / ocg;
          double acc = p.bias ? bias[o] : 0.0;
          for (int i = 0; i < icg; ++i)
            for (int ky = 0; ky < p.kernel; ++ky)
              for (int kx = 0; kx < p.kernel; ++kx) {
                const int iy = oy * p.stride - p.padding + ky;
                const int ix = ox * p.stride - p.padding + kx;
                if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
                const int ic = g * icg + i;
                acc += static_cast<double>(
                           w[((o * icg + i) * p.kernel + ky) * p.kernel + kx]) *
                       x[((n * p.c + ic) * p.h + iy) * p.w + ix];
              }
          want[((n * p.filters + o) * out.h + oy) * out.w + ox] = Act(acc, p.act);
        }
  ExpectNear(got, want, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvForwardTest,
    ::testing::Values(ConvCase{2, 1, 8, 8, 4, 3, 1, 0, 1, Activation::kNone, true},
                      ConvCase{2, 3, 9, 7, 5, 3, 2, 1, 1, Activation::kRelu, true},
                      ConvCase{1, 4, 10, 10, 8, 5, 1, 2, 1, Activation::kRelu6, false},
                      ConvCase{2, 6, 8, 8, 6, 3, 1, 1, 6, Activation::kNone, true},   // depthwise
                      ConvCase{2, 6, 9, 9, 12, 3, 2, 1, 6, Activation::kRelu6, true}, // dw x2
                      ConvCase{2, 4, 7, 7, 6, 3, 2, 0, 2, Activation::kNone, true},   // groups 2
                      ConvCase{3, 8, 5, 5, 4, 1, 1, 0, 1, Activation::kRelu, true})); // 1x1

TEST(DenseForwardTest, MatchesNaiveInnerProductOnFlatAndSpatialInputs) {
  for (const Shape& in : {Flat(13), Chw(3, 4, 5)}) {
    for (Activation act : {Activation::kNone, Activation::kRelu, Activation::kRelu6}) {
      const int n = 3, units = 7;
      auto t = SingleLayer::Make(Dense(units, act), {in}, n, 5).value();
      FillUniform(t->src(0), 3, -4, 4);
      const std::vector<float> got = t->Forward();
      auto w = t->params().tensor("fc.weight").value();
      auto bias = t->params().tensor("fc.bias").value();
      const int64_t k = in.size();
      std::vector<double> want(n * units);
      for (int i = 0; i < n; ++i)
        for (int u = 0; u < units; ++u) {
          double acc = bias[u];
          for (int64_t j = 0; j < k; ++j) acc += double(w[u * k + j]) * t->src(0)[i * k + j];
          want[i * units + u] = Act(acc, act);
        }
      ExpectNear(got, want, 1e-4);
    }
  }
}

struct PoolCase {
  LayerKind kind;
  int n, c, h, w, kernel, stride, padding;
};

class PoolForwardTest : public ::testing::TestWithParam<PoolCase> {};

TEST_P(PoolForwardTest, MatchesNaivePooling) {
  const PoolCase p = GetParam();
  auto t = SingleLayer::Make(Simple(p.kind, p.kernel, p.stride, p.padding),
                             {Chw(p.c, p.h, p.w)}, p.n, 1).value();
  FillUniform(t->src(0), 9, -3, 3);
  const std::vector<float> got = t->Forward();
  const Shape out = t->layer().output_shape();
  int kernel = p.kernel, stride = p.stride, padding = p.padding;
  if (p.kind == LayerKind::kGlobalAvgPool) {
    ASSERT_EQ(out.h, 1);
    ASSERT_EQ(out.w, 1);
    kernel = p.h;  // square inputs only for GAP cases
    stride = 1;
    padding = 0;
  }
  const auto x = t->src(0);
  std::vector<double> want(got.size());
  for (int n = 0; n < p.n; ++n)
    for (int c = 0; c < p.c; ++c)
      for (int oy = 0; oy < out.h; ++oy)
        for (int ox = 0; ox < out.w; ++ox) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0;
          int count = 0;
          for (int ky = 0; ky < kernel; ++ky)
            for (int kx = 0; kx < kernel; ++kx) {
              const int iy = oy * stride - padding + ky, ix = ox * stride - padding + kx;
              if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
              const double v = x[((n * p.c + c) * p.h + iy) * p.w + ix];
              best = std::max(best, v);
              sum += v;
              ++count;
            }
          want[((n * p.c + c) * out.h + oy) * out.w + ox] =
              p.kind == LayerKind::kMaxPool ? best : sum / count;
        }
  ExpectNear(got, want, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PoolForwardTest,
    ::testing::Values(PoolCase{LayerKind::kMaxPool, 2, 3, 8, 8, 2, 2, 0},
                      PoolCase{LayerKind::kMaxPool, 2, 2, 7, 9, 3, 2, 1},
                      PoolCase{LayerKind::kMaxPool, 1, 2, 7, 7, 2, 2, 0},  // floor mode
                      PoolCase{LayerKind::kAvgPool, 2, 3, 8, 8, 2, 2, 0},
                      PoolCase{LayerKind::kAvgPool, 2, 2, 7, 9, 3, 2, 1},  // padding excluded
                      PoolCase{LayerKind::kAvgPool, 1, 2, 6, 6, 3, 1, 1},
                      PoolCase{LayerKind::kGlobalAvgPool, 2, 5, 6, 6, 0, 1, 0},
                      PoolCase{LayerKind::kGlobalAvgPool, 3, 4, 1, 1, 0, 1, 0}));

TEST(EltwiseForwardTest, ReluAndRelu6ClampAsDefined) {
  for (LayerKind kind : {LayerKind::kRelu, LayerKind::kRelu6}) {
    auto t = SingleLayer::Make(Simple(kind), {Chw(3, 4, 4)}, 2, 1).value();
    FillUniform(t->src(0), 4, -10, 10);
    const std::vector<float> got = t->Forward();
    std::vector<double> want(got.size());
    for (size_t i = 0; i < want.size(); ++i) {
      want[i] = Act(t->src(0)[i], kind == LayerKind::kRelu ? Activation::kRelu
                                                            : Activation::kRelu6);
    }
    ExpectNear(got, want, 0);
  }
}

TEST(AddForwardTest, AddsElementwise) {
  auto t = SingleLayer::Make(Simple(LayerKind::kAdd), {Chw(4, 3, 5), Chw(4, 3, 5)}, 2, 1).value();
  FillUniform(t->src(0), 1);
  FillUniform(t->src(1), 2);
  const std::vector<float> got = t->Forward();
  std::vector<double> want(got.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = double(t->src(0)[i]) + t->src(1)[i];
  ExpectNear(got, want, 1e-6);
}

TEST(FlattenForwardTest, KeepsNchwOrderWithoutCopying) {
  auto t = SingleLayer::Make(Simple(LayerKind::kFlatten), {Chw(2, 3, 4)}, 2, 1).value();
  FillUniform(t->src(0), 1);
  const std::vector<float> got = t->Forward();
  EXPECT_EQ(t->layer().output_shape(), Flat(24));
  EXPECT_EQ(t->dst().data(), t->src(0).data());
  ASSERT_EQ(got.size(), 48u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], t->src(0)[i]);
}

}  // namespace
}  // namespace orrery::learner::testing
