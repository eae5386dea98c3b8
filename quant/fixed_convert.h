// Bulk float <-> fixed16 conversion of spans, vectorized (AVX2 chosen at run time) with a
// portable fallback. Every path gives results bit-identical to the scalar rules in
// fixed_format.h, and stochastic rounding of element i draws CounterRandom(stream.key,
// stream.offset + i), so the output depends only on (input, format, stream), never on the path
// or on how a caller splits a tensor into chunks (advance the stream by the chunk's start).
//
// All functions are thread-safe and allocation-free.
#ifndef ORRERY_QUANT_FIXED_CONVERT_H_
#define ORRERY_QUANT_FIXED_CONVERT_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "quant/counter_rng.h"
#include "quant/cpu_isa.h"
#include "quant/fixed_format.h"

namespace orrery::quant {

// Rounds in[i] to out[i]. `stream` is read only for Rounding::kStochastic.
// Returns InvalidArgument if the spans differ in length.
absl::Status Quantize(std::span<const float> in, FixedFormat format, Rounding rounding,
                      RandomStream stream, std::span<int16_t> out, Isa isa = Isa::kAuto);

// out[i] = in[i] * 2^-FL (exact). Returns InvalidArgument if the spans differ in length.
absl::Status Dequantize(std::span<const int16_t> in, FixedFormat format, std::span<float> out,
                        Isa isa = Isa::kAuto);

// Largest |x| over the finite and infinite elements (NaNs ignored); 0 for an empty span.
float MaxAbs(std::span<const float> in);

namespace internal {
// Kernels behind the functions above; `n` elements, counters starting at `offset` within one
// 2^32 block (the caller splits at block boundaries) with block key `block_key`.
void QuantizeNearestAvx2(const float* in, int64_t n, FixedFormat format, int16_t* out);
void QuantizeStochasticAvx2(const float* in, int64_t n, FixedFormat format, uint32_t block_key,
                            uint32_t first_counter, int16_t* out);
void QuantizeStochasticAvx512(const float* in, int64_t n, FixedFormat format, uint32_t block_key,
                              uint32_t first_counter, int16_t* out);
void DequantizeAvx2(const int16_t* in, int64_t n, FixedFormat format, float* out);
}  // namespace internal

}  // namespace orrery::quant

#endif  // ORRERY_QUANT_FIXED_CONVERT_H_
