// Mix32 (counter_rng.h) on every 32-bit lane of a vector, for the AVX2 and AVX-512 kernels that
// draw counter-based random numbers. Mix32(0) = 0, so lanes holding 0 stay 0: a kernel may keep
// its counters in the low halves of 64-bit lanes and get zero-extended results.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

namespace orrery::quant::internal {

__attribute__((target("avx2"), always_inline)) inline __m256i Mix32x8(__m256i h) {
  h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
  h = _mm256_mullo_epi32(h, _mm256_set1_epi32(static_cast<int>(0x85EBCA6Bu)));
  h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13));
  h = _mm256_mullo_epi32(h, _mm256_set1_epi32(static_cast<int>(0xC2B2AE35u)));
  return _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
}

__attribute__((target("avx512f"), always_inline)) inline __m512i Mix32x16(__m512i h) {
  h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
  h = _mm512_mullo_epi32(h, _mm512_set1_epi32(static_cast<int>(0x85EBCA6Bu)));
  h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 13));
  h = _mm512_mullo_epi32(h, _mm512_set1_epi32(static_cast<int>(0xC2B2AE35u)));
  return _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
}

}  // namespace orrery::quant::internal

#endif
