// Fixed-point matrix multiply: int16 operands in formats <IL_a, FL_a> and <IL_b, FL_b>, products
// accumulated exactly, and each output rounded once (nearest or stochastic) to an output format
// <IL_c, FL_c>. The exact product has FL_a + FL_b fractional bits; rounding shifts it by
// FL_a + FL_b - FL_c.
//
// Exactness: vector kernels sum in int32 lanes over K blocks that a Cauchy-Schwarz bound on the
// operands proves cannot overflow, carry the high bits out between blocks, and widen to int64.
// When even 16 elements of K cannot be proven safe (operands near full int16 range), the call
// falls back to the portable int64 loop: still exact, much slower.
//
// Kernels: AVX-512 VNNI (vpdpwssd), AVX2 (vpmaddwd) or portable, chosen at run time; all give
// bit-identical results. Stochastic rounding of output (i, j) draws
// CounterRandom(stream.key, stream.offset + i * n + j), independent of ISA and thread count.
//
// Thread-safe with distinct workspaces; packs both operands on every call and, with threads > 1,
// runs an OpenMP parallel region of that many threads and returns when it is done.
#ifndef ORRERY_QUANT_FIXED_GEMM_H_
#define ORRERY_QUANT_FIXED_GEMM_H_

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "quant/counter_rng.h"
#include "quant/cpu_isa.h"
#include "quant/fixed_format.h"

namespace orrery::quant {

// A borrowed, read-only view of a logical rows x cols int16 matrix stored row-major with leading
// dimension `stride` (elements between stored rows). With `transposed`, the stored matrix is
// cols x rows and the view reads element (i, j) at data[j * stride + i].
struct FixedMatrixView {
  const int16_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;
  bool transposed = false;
  FixedFormat format;

  int16_t At(int64_t i, int64_t j) const {
    return transposed ? data[j * stride + i] : data[i * stride + j];
  }
};

// Scratch memory (packed operands, accumulators) kept between FixedGemm calls so a warm call
// allocates nothing. Not thread-safe: use one per calling thread. Movable, not copyable.
class GemmWorkspace {
 public:
  GemmWorkspace();
  ~GemmWorkspace();
  GemmWorkspace(GemmWorkspace&&) noexcept;
  GemmWorkspace& operator=(GemmWorkspace&&) noexcept;

  struct Buffers;  // defined in fixed_gemm.cc
  Buffers& buffers() { return *buffers_; }

 private:
  std::unique_ptr<Buffers> buffers_;
};

struct GemmOptions {
  Rounding rounding = Rounding::kNearest;
  RandomStream stream;  // read only for Rounding::kStochastic
  int threads = 1;      // OpenMP threads; 1 runs on the calling thread only
  Isa isa = Isa::kAuto;
  GemmWorkspace* workspace = nullptr;  // borrowed; null allocates scratch for this call only
};

// c (a.rows x b.cols, leading dimension ldc, row-major) = round(a * b) in `out_format`.
// Returns InvalidArgument on mismatched shapes, null data with nonzero size, or bad strides;
// then c is untouched.
absl::Status FixedGemm(const FixedMatrixView& a, const FixedMatrixView& b, FixedFormat out_format,
                       const GemmOptions& options, int16_t* c, int64_t ldc);

// The exact integer products before rounding: c = a * b as int64 (value c * 2^-(FL_a + FL_b)).
// Uses the same kernels as FixedGemm; `options.rounding` and `stream` are ignored.
absl::Status FixedGemmExact(const FixedMatrixView& a, const FixedMatrixView& b,
                            const GemmOptions& options, int64_t* c, int64_t ldc);

// Rounds exact accumulators acc[j] (`shift` more fractional bits than the output) into out[j],
// j < min(acc.size(), out.size()), exactly as FixedGemm rounds an output row: element j draws
// CounterRandom(stream.key, stream.offset + j). Vectorised like FixedGemm's rounding.
void RoundAccumulators(std::span<const int64_t> acc, int shift, Rounding rounding,
                       RandomStream stream, std::span<int16_t> out, Isa isa = Isa::kAuto);

// The output rounding rule, exposed for tests and reference code: `acc` is an exact accumulator
// with `shift` more fractional bits than the output (shift < 0 means fewer). Nearest rounds half
// to even; stochastic rounds up with probability rem / 2^shift using the 32-bit `random` (exact
// for shift <= 32, bias below 2^-32 epsilon beyond). Saturates to the int16 range.
int16_t RoundAccumulator(int64_t acc, int shift, Rounding rounding, uint32_t random);

}  // namespace orrery::quant

#endif  // ORRERY_QUANT_FIXED_GEMM_H_
