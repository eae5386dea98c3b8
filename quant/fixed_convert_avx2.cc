// AVX2 (and one AVX-512) kernels for fixed_convert.h, compiled with per-function target attributes so the rest of
// the library stays baseline x86-64. Each kernel mirrors the scalar rule in fixed_format.cc
// operation for operation, so results are bit-identical.
#include "quant/fixed_convert.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "quant/simd_mix.h"

// GCC 12's intrinsic headers trip -W(maybe-)uninitialized on their own _mm*_undefined_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define ORRERY_AVX2 __attribute__((target("avx2,fma")))
#define ORRERY_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

namespace orrery::quant::internal {
namespace {

// NaN lanes -> 0.
ORRERY_AVX2_INLINE __m256 ZeroNaN(__m256 x) {
  return _mm256_and_ps(x, _mm256_cmp_ps(x, x, _CMP_ORD_Q));
}

ORRERY_AVX2_INLINE __m256 Saturate(__m256 v) {
  v = _mm256_max_ps(v, _mm256_set1_ps(static_cast<float>(kFixedMin)));
  return _mm256_min_ps(v, _mm256_set1_ps(static_cast<float>(kFixedMax)));
}

// Two vectors of integral floats in the int16 range -> 16 int16 in order.
ORRERY_AVX2_INLINE __m256i PackToInt16(__m256 a, __m256 b) {
  const __m256i p = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
  return _mm256_permute4x64_epi64(p, 0xD8);
}

ORRERY_AVX2_INLINE __m256 StochasticLanes(__m256 x, __m256 scale, __m256i random) {
  const __m256 s = _mm256_mul_ps(ZeroNaN(x), scale);
  const __m256 f = _mm256_floor_ps(s);
  const __m256 frac = _mm256_sub_ps(s, f);
  const __m256 u =
      _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(random, 8)), _mm256_set1_ps(0x1p-24f));
  const __m256 up = _mm256_and_ps(_mm256_cmp_ps(u, frac, _CMP_LT_OQ), _mm256_set1_ps(1.0f));
  return Saturate(_mm256_add_ps(f, up));
}

}  // namespace

ORRERY_AVX2 void QuantizeNearestAvx2(const float* in, int64_t n, FixedFormat format, int16_t* out) {
  const __m256 vs = _mm256_set1_ps(format.scale());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_mul_ps(ZeroNaN(_mm256_loadu_ps(in + i)), vs);
    const __m256 b = _mm256_mul_ps(ZeroNaN(_mm256_loadu_ps(in + i + 8)), vs);
    const __m256 ra = Saturate(_mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m256 rb = Saturate(_mm256_round_ps(b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), PackToInt16(ra, rb));
  }
  for (; i < n; ++i) out[i] = RoundNearest(in[i], format);
}

ORRERY_AVX2 void QuantizeStochasticAvx2(const float* in, int64_t n, FixedFormat format,
                                        uint32_t block_key, uint32_t first_counter, int16_t* out) {
  const __m256 vs = _mm256_set1_ps(format.scale());
  const __m256i mult = _mm256_set1_epi32(static_cast<int>(kCounterMultiplier));
  const __m256i key = _mm256_set1_epi32(static_cast<int>(block_key));
  // Counter * multiplier advances by 8 * multiplier per vector of 8 lanes.
  __m256i h0 = _mm256_add_epi32(
      _mm256_mullo_epi32(_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(first_counter)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
                         mult),
      key);
  const __m256i step8 = _mm256_set1_epi32(static_cast<int>(8u * kCounterMultiplier));
  const __m256i step16 = _mm256_set1_epi32(static_cast<int>(16u * kCounterMultiplier));
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h1 = _mm256_add_epi32(h0, step8);
    const __m256 ra = StochasticLanes(_mm256_loadu_ps(in + i), vs, Mix32x8(h0));
    const __m256 rb = StochasticLanes(_mm256_loadu_ps(in + i + 8), vs, Mix32x8(h1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), PackToInt16(ra, rb));
    h0 = _mm256_add_epi32(h0, step16);
  }
  for (; i < n; ++i) {
    const uint32_t c = first_counter + static_cast<uint32_t>(i);
    out[i] = RoundStochastic(in[i], format, Mix32(c * kCounterMultiplier + block_key));
  }
}

#define ORRERY_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))

// The 16-lane twin of QuantizeStochasticAvx2, operation for operation (bit-identical).
ORRERY_AVX512 void QuantizeStochasticAvx512(const float* in, int64_t n, FixedFormat format,
                                            uint32_t block_key, uint32_t first_counter,
                                            int16_t* out) {
  const __m512 vs = _mm512_set1_ps(format.scale());
  const __m512 lo = _mm512_set1_ps(static_cast<float>(kFixedMin));
  const __m512 hi = _mm512_set1_ps(static_cast<float>(kFixedMax));
  const __m512 one = _mm512_set1_ps(1.0f), ulp24 = _mm512_set1_ps(0x1p-24f);
  __m512i h = _mm512_add_epi32(
      _mm512_mullo_epi32(
          _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(first_counter)),
                           _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)),
          _mm512_set1_epi32(static_cast<int>(kCounterMultiplier))),
      _mm512_set1_epi32(static_cast<int>(block_key)));
  const __m512i step = _mm512_set1_epi32(static_cast<int>(16u * kCounterMultiplier));
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i r = Mix32x16(h);
    const __m512 x = _mm512_loadu_ps(in + i);
    const __m512 s = _mm512_mul_ps(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, x, _CMP_ORD_Q), x), vs);
    const __m512 f = _mm512_roundscale_ps(s, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512 frac = _mm512_sub_ps(s, f);
    const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(r, 8)), ulp24);
    __m512 v = _mm512_mask_add_ps(f, _mm512_cmp_ps_mask(u, frac, _CMP_LT_OQ), f, one);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(v)));
    h = _mm512_add_epi32(h, step);
  }
  for (; i < n; ++i) {
    const uint32_t c = first_counter + static_cast<uint32_t>(i);
    out[i] = RoundStochastic(in[i], format, Mix32(c * kCounterMultiplier + block_key));
  }
}

ORRERY_AVX2 void DequantizeAvx2(const int16_t* in, int64_t n, FixedFormat format, float* out) {
  const __m256 vs = _mm256_set1_ps(format.inverse_scale());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i));
    const __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(q));
    const __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(q, 1));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), vs));
    _mm256_storeu_ps(out + i + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), vs));
  }
  for (; i < n; ++i) out[i] = ToFloat(in[i], format);
}

}  // namespace orrery::quant::internal

#else  // not x86: ResolveIsa never selects these, but the symbols must exist.

namespace orrery::quant::internal {
void QuantizeNearestAvx2(const float*, int64_t, FixedFormat, int16_t*) {}
void QuantizeStochasticAvx2(const float*, int64_t, FixedFormat, uint32_t, uint32_t, int16_t*) {}
void QuantizeStochasticAvx512(const float*, int64_t, FixedFormat, uint32_t, uint32_t, int16_t*) {}
void DequantizeAvx2(const int16_t*, int64_t, FixedFormat, float*) {}
}  // namespace orrery::quant::internal

#endif
