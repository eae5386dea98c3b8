// AVX2 and AVX-512 VNNI micro-kernels, compiled with per-function target attributes.
#include "quant/gemm_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

// GCC 12's intrinsic headers trip -Wmaybe-uninitialized on their own _mm*_undefined_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace orrery::quant::internal {

__attribute__((target("avx2,fma"))) void GemmKernelAvx2(const int32_t* a, const int16_t* b,
                                                         int64_t npairs, int64_t* acc,
                                                         int64_t ldacc, bool first) {
  constexpr int kMr = kAvx2Mr;
  __m256i c[kMr][2];
  for (int r = 0; r < kMr; ++r) c[r][0] = c[r][1] = _mm256_setzero_si256();
  for (int64_t p = 0; p < npairs; ++p) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 16));
    b += 2 * kAvx2Nr;
#pragma GCC unroll 6
    for (int r = 0; r < kMr; ++r) {
      const __m256i av = _mm256_set1_epi32(a[r]);
      c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(av, b0));
      c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(av, b1));
    }
    a += kMr;
  }
  for (int r = 0; r < kMr; ++r) {
    for (int h = 0; h < 2; ++h) {
      int64_t* dst = acc + r * ldacc + h * 8;
      __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(c[r][h]));
      __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(c[r][h], 1));
      if (!first) {
        lo = _mm256_add_epi64(lo, _mm256_load_si256(reinterpret_cast<const __m256i*>(dst)));
        hi = _mm256_add_epi64(hi, _mm256_load_si256(reinterpret_cast<const __m256i*>(dst + 4)));
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst), lo);
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 4), hi);
    }
  }
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) void GemmKernelAvx512(
    const int32_t* a, const int16_t* b, int64_t npairs, int64_t* acc, int64_t ldacc,
    bool first) {
  constexpr int kMr = kAvx512Mr;
  __m512i c[kMr][2];
  for (int r = 0; r < kMr; ++r) c[r][0] = c[r][1] = _mm512_setzero_si512();
  for (int64_t p = 0; p < npairs; ++p) {
    const __m512i b0 = _mm512_load_si512(b);
    const __m512i b1 = _mm512_load_si512(b + 32);
    b += 2 * kAvx512Nr;
#pragma GCC unroll 8
    for (int r = 0; r < kMr; ++r) {
      const __m512i av = _mm512_set1_epi32(a[r]);
      c[r][0] = _mm512_dpwssd_epi32(c[r][0], av, b0);
      c[r][1] = _mm512_dpwssd_epi32(c[r][1], av, b1);
    }
    a += kMr;
  }
  for (int r = 0; r < kMr; ++r) {
    for (int h = 0; h < 2; ++h) {
      int64_t* dst = acc + r * ldacc + h * 16;
      __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(c[r][h]));
      __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(c[r][h], 1));
      if (!first) {
        lo = _mm512_add_epi64(lo, _mm512_load_si512(dst));
        hi = _mm512_add_epi64(hi, _mm512_load_si512(dst + 8));
      }
      _mm512_store_si512(dst, lo);
      _mm512_store_si512(dst + 8, hi);
    }
  }
}

}  // namespace orrery::quant::internal

#else

namespace orrery::quant::internal {
void GemmKernelAvx2(const int32_t*, const int16_t*, int64_t, int64_t*, int64_t, bool) {}
void GemmKernelAvx512(const int32_t*, const int16_t*, int64_t, int64_t*, int64_t, bool) {}
}  // namespace orrery::quant::internal

#endif
