#include "quant/fixed_gemm.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "quant/gemm_kernels.h"

namespace orrery::quant {
namespace {

struct Operand {
  std::vector<int16_t> storage;
  FixedMatrixView view;
};

// A logical rows x cols matrix with entries uniform in [-bound, bound], stored transposed or not
// with some padding in the stride.
Operand RandomOperand(int64_t rows, int64_t cols, int bound, bool transposed, int fl,
                      std::mt19937* gen) {
  const int64_t stored_rows = transposed ? cols : rows, stored_cols = transposed ? rows : cols;
  const int64_t stride = stored_cols + 3;
  Operand op;
  op.storage.resize(static_cast<size_t>(std::max<int64_t>(stored_rows * stride, 1)));
  std::uniform_int_distribution<int> dist(-bound, bound);
  for (int16_t& v : op.storage) v = static_cast<int16_t>(std::max(-32768, dist(*gen)));
  op.view = FixedMatrixView{
      op.storage.data(), rows, cols, stride, transposed, FixedFormat::WithFractionalBits(fl)};
  return op;
}

std::vector<int64_t> ReferenceProduct(const FixedMatrixView& a, const FixedMatrixView& b) {
  std::vector<int64_t> c(static_cast<size_t>(a.rows * b.cols), 0);
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t j = 0; j < b.cols; ++j) {
      int64_t s = 0;
      for (int64_t k = 0; k < a.cols; ++k) s += int64_t{a.At(i, k)} * b.At(k, j);
      c[i * b.cols + j] = s;
    }
  }
  return c;
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> isas = {Isa::kPortable};
  if (IsaSupported(Isa::kAvx2)) isas.push_back(Isa::kAvx2);
  if (IsaSupported(Isa::kAvx512)) isas.push_back(Isa::kAvx512);
  return isas;
}

// (m, k, n, operand magnitude bound): shapes off every vector width and tile size; magnitudes
// from small (one int32 block covers K) to full range (forces many blocks or the int64 path).
using Shape = std::tuple<int64_t, int64_t, int64_t, int>;

class GemmShapesTest : public ::testing::TestWithParam<Shape> {};

TEST_P(GemmShapesTest, ExactProductMatchesIntegerReferenceOnEveryPath) {
  const auto [m, k, n, bound] = GetParam();
  std::mt19937 gen(static_cast<uint32_t>(m * 131 + k * 7 + n + bound));
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const Operand a = RandomOperand(m, k, bound, ta, 12, &gen);
      const Operand b = RandomOperand(k, n, bound, tb, 10, &gen);
      const std::vector<int64_t> want = ReferenceProduct(a.view, b.view);
      for (Isa isa : SupportedIsas()) {
        for (int threads : {1, 2}) {
          const int64_t ldc = n + 5;
          std::vector<int64_t> c(static_cast<size_t>(std::max<int64_t>(m * ldc, 1)), -7);
          GemmOptions options;
          options.isa = isa;
          options.threads = threads;
          ASSERT_TRUE(FixedGemmExact(a.view, b.view, options, c.data(), ldc).ok());
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              ASSERT_EQ(c[i * ldc + j], want[i * n + j])
                  << IsaName(isa) << " ta=" << ta << " tb=" << tb << " (" << i << "," << j << ")";
            }
            for (int64_t j = n; j < ldc && i + 1 < m; ++j) ASSERT_EQ(c[i * ldc + j], -7);
          }
        }
      }
    }
  }
}

TEST_P(GemmShapesTest, RoundedOutputMatchesReferenceRoundingOnEveryPath) {
  const auto [m, k, n, bound] = GetParam();
  std::mt19937 gen(static_cast<uint32_t>(m + k * 31 + n * 1001 + bound));
  // Input formats whose product keeps 24 or 55 fractional bits: shifts from -2 to 55.
  for (const auto& [fl_a, fl_b] : {std::pair{13, 11}, std::pair{28, 27}}) {
    const Operand a = RandomOperand(m, k, bound, false, fl_a, &gen);
    const Operand b = RandomOperand(k, n, bound, true, fl_b, &gen);
    const std::vector<int64_t> exact = ReferenceProduct(a.view, b.view);
    for (int out_fl : {0, 8, 12, 26}) {
      const int shift = fl_a + fl_b - out_fl;
      for (Rounding rounding : {Rounding::kNearest, Rounding::kStochastic}) {
        GemmOptions options;
        options.rounding = rounding;
        options.stream = RandomStream::For(2, 9).Advanced(5);
        std::vector<int16_t> want(exact.size());
        for (size_t e = 0; e < exact.size(); ++e) {
          want[e] = RoundAccumulator(exact[e], shift, rounding,
                                     CounterRandom(options.stream.key, options.stream.offset + e));
        }
        for (Isa isa : SupportedIsas()) {
          options.isa = isa;
          options.threads = isa == Isa::kPortable ? 1 : 2;
          std::vector<int16_t> c(exact.size());
          ASSERT_TRUE(FixedGemm(a.view, b.view, FixedFormat::WithFractionalBits(out_fl), options,
                                c.data(), n)
                          .ok());
          ASSERT_EQ(c, want) << IsaName(isa) << " shift=" << shift;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmShapesTest,
                         ::testing::Values(Shape{1, 1, 1, 100}, Shape{7, 3, 5, 32768},
                                           Shape{6, 16, 16, 1000}, Shape{8, 32, 32, 1000},
                                           Shape{13, 33, 17, 4000}, Shape{64, 784, 10, 3000},
                                           Shape{97, 130, 257, 2000}, Shape{100, 515, 70, 9000},
                                           Shape{33, 1100, 40, 300}, Shape{20, 200, 45, 32768},
                                           Shape{5, 0, 4, 10}));

TEST(PlanKBlocksTest, BlocksKeepInt32LanesInRangeAndFallBackWhenTheyCannot) {
  std::mt19937 gen(1);
  // Small magnitudes: one cache-sized block per 512 elements.
  Operand a = RandomOperand(10, 1100, 100, false, 8, &gen);
  Operand b = RandomOperand(1100, 20, 100, false, 8, &gen);
  EXPECT_EQ(internal::PlanKBlocks(a.view, b.view), (std::vector<int64_t>{256, 512, 550}));
  // Larger magnitudes: more, shorter blocks, each provably safe.
  a = RandomOperand(10, 1100, 9000, false, 8, &gen);
  b = RandomOperand(1100, 20, 9000, true, 8, &gen);
  const std::vector<int64_t> ends = internal::PlanKBlocks(a.view, b.view);
  ASSERT_GT(ends.size(), 3u);
  EXPECT_EQ(ends.back(), 550);
  int64_t p0 = 0;
  for (int64_t p1 : ends) {
    ASSERT_GT(p1, p0);
    __extension__ using Wide = unsigned __int128;
    Wide a_max = 0, b_max = 0;
    for (int64_t i = 0; i < a.view.rows; ++i) {
      Wide s = 0;
      for (int64_t k = 2 * p0; k < std::min<int64_t>(2 * p1, 1100); ++k) {
        s += static_cast<Wide>(int64_t{a.view.At(i, k)} * a.view.At(i, k));
      }
      a_max = std::max(a_max, s);
    }
    for (int64_t j = 0; j < b.view.cols; ++j) {
      Wide s = 0;
      for (int64_t k = 2 * p0; k < std::min<int64_t>(2 * p1, 1100); ++k) {
        s += static_cast<Wide>(int64_t{b.view.At(k, j)} * b.view.At(k, j));
      }
      b_max = std::max(b_max, s);
    }
    EXPECT_LE(a_max * b_max, static_cast<Wide>(0x7FFFFFFF) * 0x7FFFFFFF);
    p0 = p1;
  }
  // Full-range operands cannot be proven safe over 16 elements: the int64 path takes over.
  a = RandomOperand(4, 64, 32768, false, 8, &gen);
  b = RandomOperand(64, 4, 32768, false, 8, &gen);
  EXPECT_TRUE(internal::PlanKBlocks(a.view, b.view).empty());
}

// The packers take the squared norms while packing (AVX-512: whole granules in vector code, the
// rest scalar); the blocks they lead to must be those planned from the unpacked operands.
TEST(PlanKBlocksTest, PackingPlansTheSameBlocksAsTheOperands) {
  std::mt19937 gen(3);
  std::vector<Isa> isas;
  if (IsaSupported(Isa::kAvx2)) isas.push_back(Isa::kAvx2);
  if (IsaSupported(Isa::kAvx512)) isas.push_back(Isa::kAvx512);
  if (isas.empty()) GTEST_SKIP() << "no vector ISA on this CPU";
  int split = 0;  // cases planned as more than one block: the squares decide where
  // (m, k, n, bound of A, bound of B, one granule of A's row 5 and of B's column 3 at -32768)
  for (const auto& [m, k, n, a_bound, b_bound, extreme] :
       {std::tuple<int64_t, int64_t, int64_t, int, int, bool>{12, 1100, 64, 9000, 9000, false},
        {13, 515, 70, 9000, 9000, false},
        {97, 130, 257, 12000, 12000, false},
        {7, 48, 33, 15000, 15000, false},
        {6, 1100, 32, 2000, 3000, true},
        {11, 200, 45, 2000, 3000, true}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        Operand a = RandomOperand(m, k, a_bound, ta, 8, &gen);
        Operand b = RandomOperand(k, n, b_bound, tb, 8, &gen);
        // lo^2 + hi^2 = 2^31 for each of its pairs: the case that overflows a signed 32-bit lane.
        for (int64_t e = 16; extreme && e < 32; ++e) {
          a.storage[ta ? e * a.view.stride + 5 : 5 * a.view.stride + e] = -32768;
          b.storage[tb ? 3 * b.view.stride + e + 16 : (e + 16) * b.view.stride + 3] = -32768;
        }
        const std::vector<int64_t> want = internal::PlanKBlocks(a.view, b.view);
        for (Isa isa : isas) {
          GemmWorkspace workspace;
          EXPECT_EQ(internal::PackAndPlan(a.view, b.view, isa, &workspace.buffers()), want)
              << IsaName(isa) << " " << m << "x" << k << "x" << n << " ta=" << ta << " tb=" << tb;
        }
        if (want.size() > 1) ++split;
      }
    }
  }
  EXPECT_EQ(split, 24);
}

TEST(RoundAccumulatorTest, NearestIsHalfToEvenAndSaturates) {
  EXPECT_EQ(RoundAccumulator(5, 1, Rounding::kNearest, 0), 2);    // 2.5 -> 2
  EXPECT_EQ(RoundAccumulator(7, 1, Rounding::kNearest, 0), 4);    // 3.5 -> 4
  EXPECT_EQ(RoundAccumulator(-5, 1, Rounding::kNearest, 0), -2);  // -2.5 -> -2
  EXPECT_EQ(RoundAccumulator(-7, 2, Rounding::kNearest, 0), -2);  // -1.75 -> -2
  EXPECT_EQ(RoundAccumulator(int64_t{1} << 40, 10, Rounding::kNearest, 0), 32767);
  EXPECT_EQ(RoundAccumulator(-(int64_t{1} << 40), 10, Rounding::kNearest, 0), -32768);
  EXPECT_EQ(RoundAccumulator(3, -2, Rounding::kNearest, 0), 12);
  EXPECT_EQ(RoundAccumulator(40000, -1, Rounding::kNearest, 0), 32767);
  EXPECT_EQ(RoundAccumulator(-9000, -2, Rounding::kNearest, 0), -32768);
}

TEST(RoundAccumulatorTest, StochasticMeanIsUnbiased) {
  constexpr int kDraws = 100000;
  for (int64_t acc : {int64_t{3}, int64_t{-3}, int64_t{1000001}, int64_t{-77777}}) {
    for (int shift : {4, 20, 40}) {
      const double exact = static_cast<double>(acc) / std::ldexp(1.0, shift);
      if (std::fabs(exact) > 32000) continue;  // would saturate
      double sum = 0;
      for (int i = 0; i < kDraws; ++i) {
        sum += RoundAccumulator(acc, shift, Rounding::kStochastic,
                                CounterRandom(8, static_cast<uint64_t>(i)));
      }
      EXPECT_NEAR(sum / kDraws, exact, 5 * 0.5 / std::sqrt(kDraws)) << acc << " " << shift;
    }
  }
}

TEST(RoundAccumulatorsTest, MatchesTheScalarRuleOnEveryPathAcrossACounterBlock) {
  std::mt19937_64 gen(5);
  std::vector<int64_t> acc(37);
  for (int64_t& v : acc) v = static_cast<int64_t>(gen() >> 20) - (int64_t{1} << 43);
  acc[3] = int64_t{1} << 50;     // saturates high
  acc[4] = -(int64_t{1} << 50);  // and low
  for (int shift : {-2, 0, 7, 24, 40}) {
    for (Rounding rounding : {Rounding::kNearest, Rounding::kStochastic}) {
      // The second stream's counters cross a 2^32 block inside the span.
      for (RandomStream stream : {RandomStream::For(3, 1), RandomStream::For(3, 1).Advanced(
                                                               (uint64_t{1} << 32) - 20)}) {
        std::vector<int16_t> want(acc.size());
        for (size_t j = 0; j < acc.size(); ++j) {
          want[j] = RoundAccumulator(acc[j], shift, rounding,
                                     CounterRandom(stream.key, stream.offset + j));
        }
        for (Isa isa : SupportedIsas()) {
          std::vector<int16_t> got(acc.size(), 99);
          RoundAccumulators(acc, shift, rounding, stream, got, isa);
          ASSERT_EQ(got, want) << IsaName(isa) << " shift=" << shift;
        }
      }
    }
  }
}

TEST(FixedGemmTest, OneWorkspaceServesCallsOfEveryShape) {
  std::mt19937 gen(5);
  GemmWorkspace workspace;
  for (const auto& [m, k, n] : {std::tuple<int64_t, int64_t, int64_t>{200, 600, 300},
                                {3, 5, 7},
                                {64, 784, 256},
                                {1, 2000, 1}}) {
    const Operand a = RandomOperand(m, k, 5000, false, 12, &gen);
    const Operand b = RandomOperand(k, n, 5000, false, 12, &gen);
    const std::vector<int64_t> want = ReferenceProduct(a.view, b.view);
    GemmOptions options;
    options.workspace = &workspace;
    std::vector<int64_t> c(static_cast<size_t>(m * n));
    ASSERT_TRUE(FixedGemmExact(a.view, b.view, options, c.data(), n).ok());
    ASSERT_EQ(c, want) << m << "x" << k << "x" << n;
  }
}

TEST(FixedGemmTest, InvalidArgumentsAreRejectedWithoutWriting) {
  std::vector<int16_t> a(6, 1), b(6, 1), c(4, 9);
  FixedMatrixView va{a.data(), 2, 3, 3, false, FixedFormat{}};
  FixedMatrixView vb{b.data(), 2, 3, 3, false, FixedFormat{}};  // 2x3: k mismatch
  EXPECT_EQ(FixedGemm(va, vb, FixedFormat{}, {}, c.data(), 2).code(),
            absl::StatusCode::kInvalidArgument);
  vb = FixedMatrixView{b.data(), 3, 2, 2, false, FixedFormat{}};
  EXPECT_EQ(FixedGemm(va, vb, FixedFormat{}, {}, c.data(), 1).code(),
            absl::StatusCode::kInvalidArgument);  // ldc < n
  EXPECT_EQ(FixedGemm(va, vb, FixedFormat{}, {}, nullptr, 2).code(),
            absl::StatusCode::kInvalidArgument);
  va.stride = 2;  // shorter than a stored row
  EXPECT_EQ(FixedGemm(va, vb, FixedFormat{}, {}, c.data(), 2).code(),
            absl::StatusCode::kInvalidArgument);
  for (int16_t v : c) EXPECT_EQ(v, 9);
}

}  // namespace
}  // namespace orrery::quant
