// AVX2 and AVX-512 VNNI micro-kernels, compiled with per-function target attributes.
#include "quant/gemm_kernels.h"

#include "quant/counter_rng.h"
#include "quant/fixed_format.h"
#include "quant/fixed_gemm.h"
#include "quant/simd_mix.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

// GCC 12's intrinsic headers trip -W(maybe-)uninitialized on their own _mm*_undefined_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace orrery::quant::internal {

// The accumulators are named variables, not an array: GCC 12 otherwise copies every
// accumulator through a second register on each iteration.
#define ORRERY_ROWS3(X) X(0) X(1) X(2)
#define ORRERY_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)

// acc += vpdpwssd(a, b). Inline asm because GCC 12 copies the accumulator of the
// _mm512_dpwssd_epi32 builtin into a fresh register on every use, halving the kernel's speed.
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) inline void DotAccumulate(
    __m512i& acc, __m512i a, __m512i b) {
  asm("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
}

__attribute__((target("avx2,fma"))) void GemmKernelAvx2(const int32_t* a, const int16_t* b,
                                                        const int64_t* block_pairs, int64_t blocks,
                                                        int64_t* acc, int64_t ldacc, bool first) {
  static_assert(kAvx2Mr == 3 && kAvx2Nr == 16);
  // c: the running int32 lanes; h: their high parts moved out between blocks (15 of 16 ymm).
#define ORRERY_DECLARE(r)                                      \
  __m256i c##r##0 = _mm256_setzero_si256(), c##r##1 = c##r##0; \
  __m256i h##r##0 = c##r##0, h##r##1 = c##r##0;
  ORRERY_ROWS3(ORRERY_DECLARE)
#undef ORRERY_DECLARE
  const __m256i low_mask = _mm256_set1_epi32(0xFFFF);
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t npairs = block_pairs[blk];
    for (int64_t p = 0; p < npairs; ++p) {
      const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
      const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 16));
#define ORRERY_STEP(r)                                              \
  {                                                                 \
    const __m256i av = _mm256_set1_epi32(a[r]);                     \
    c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(av, b0)); \
    c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(av, b1)); \
  }
      ORRERY_ROWS3(ORRERY_STEP)
#undef ORRERY_STEP
      b += 2 * kAvx2Nr;
      a += kAvx2Mr;
    }
    if (blk + 1 < blocks) {
#define ORRERY_SPLIT(r)                                                \
  h##r##0 = _mm256_add_epi32(h##r##0, _mm256_srai_epi32(c##r##0, 16)); \
  h##r##1 = _mm256_add_epi32(h##r##1, _mm256_srai_epi32(c##r##1, 16)); \
  c##r##0 = _mm256_and_si256(c##r##0, low_mask);                       \
  c##r##1 = _mm256_and_si256(c##r##1, low_mask);
      ORRERY_ROWS3(ORRERY_SPLIT)
#undef ORRERY_SPLIT
    }
  }
  // value = h * 2^16 + c, widened to int64.
#define ORRERY_WIDEN(h, c, half)                                          \
  _mm256_add_epi64(_mm256_slli_epi64(_mm256_cvtepi32_epi64(half(h)), 16), \
                   _mm256_cvtepi32_epi64(half(c)))
#define ORRERY_LOW_HALF(v) _mm256_castsi256_si128(v)
#define ORRERY_HIGH_HALF(v) _mm256_extracti128_si256(v, 1)
#define ORRERY_FLUSH_HALF(h, c, dst)                                                           \
  {                                                                                            \
    __m256i lo = ORRERY_WIDEN(h, c, ORRERY_LOW_HALF);                                          \
    __m256i hi = ORRERY_WIDEN(h, c, ORRERY_HIGH_HALF);                                         \
    if (!first) {                                                                              \
      lo = _mm256_add_epi64(lo, _mm256_load_si256(reinterpret_cast<const __m256i*>(dst)));     \
      hi = _mm256_add_epi64(hi, _mm256_load_si256(reinterpret_cast<const __m256i*>(dst + 4))); \
    }                                                                                          \
    _mm256_store_si256(reinterpret_cast<__m256i*>(dst), lo);                                   \
    _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 4), hi);                               \
  }
#define ORRERY_FLUSH(r)                                  \
  ORRERY_FLUSH_HALF(h##r##0, c##r##0, (acc + r * ldacc)) \
  ORRERY_FLUSH_HALF(h##r##1, c##r##1, (acc + r * ldacc + 8))
  ORRERY_ROWS3(ORRERY_FLUSH)
#undef ORRERY_FLUSH
#undef ORRERY_FLUSH_HALF
#undef ORRERY_HIGH_HALF
#undef ORRERY_LOW_HALF
#undef ORRERY_WIDEN
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) void GemmKernelAvx512(
    const int32_t* a, const int16_t* b, const int64_t* block_pairs, int64_t blocks, int64_t* acc,
    int64_t ldacc, bool first) {
  static_assert(kAvx512Mr == 6 && kAvx512Nr == 32);
  // c: the running int32 lanes; h: their high parts moved out between blocks.
#define ORRERY_DECLARE(r)                                      \
  __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0; \
  __m512i h##r##0 = c##r##0, h##r##1 = c##r##0;
  ORRERY_ROWS6(ORRERY_DECLARE)
#undef ORRERY_DECLARE
  const __m512i low_mask = _mm512_set1_epi32(0xFFFF);
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t npairs = block_pairs[blk];
    for (int64_t p = 0; p < npairs; ++p) {
      const __m512i b0 = _mm512_load_si512(b);
      const __m512i b1 = _mm512_load_si512(b + 32);
#define ORRERY_STEP(r)                          \
  {                                             \
    const __m512i av = _mm512_set1_epi32(a[r]); \
    DotAccumulate(c##r##0, av, b0);             \
    DotAccumulate(c##r##1, av, b1);             \
  }
      ORRERY_ROWS6(ORRERY_STEP)
#undef ORRERY_STEP
      b += 2 * kAvx512Nr;
      a += kAvx512Mr;
    }
    if (blk + 1 < blocks) {
#define ORRERY_SPLIT(r)                                                \
  h##r##0 = _mm512_add_epi32(h##r##0, _mm512_srai_epi32(c##r##0, 16)); \
  h##r##1 = _mm512_add_epi32(h##r##1, _mm512_srai_epi32(c##r##1, 16)); \
  c##r##0 = _mm512_and_si512(c##r##0, low_mask);                       \
  c##r##1 = _mm512_and_si512(c##r##1, low_mask);
      ORRERY_ROWS6(ORRERY_SPLIT)
#undef ORRERY_SPLIT
    }
  }
  // value = h * 2^16 + c, widened to int64.
#define ORRERY_WIDEN(h, c, half)                                          \
  _mm512_add_epi64(_mm512_slli_epi64(_mm512_cvtepi32_epi64(half(h)), 16), \
                   _mm512_cvtepi32_epi64(half(c)))
#define ORRERY_LOW_HALF(v) _mm512_castsi512_si256(v)
#define ORRERY_HIGH_HALF(v) _mm512_extracti64x4_epi64(v, 1)
#define ORRERY_FLUSH_HALF(h, c, dst)                         \
  {                                                          \
    __m512i lo = ORRERY_WIDEN(h, c, ORRERY_LOW_HALF);        \
    __m512i hi = ORRERY_WIDEN(h, c, ORRERY_HIGH_HALF);       \
    if (!first) {                                            \
      lo = _mm512_add_epi64(lo, _mm512_load_si512(dst));     \
      hi = _mm512_add_epi64(hi, _mm512_load_si512(dst + 8)); \
    }                                                        \
    _mm512_store_si512(dst, lo);                             \
    _mm512_store_si512(dst + 8, hi);                         \
  }
#define ORRERY_FLUSH(r)                                  \
  ORRERY_FLUSH_HALF(h##r##0, c##r##0, (acc + r * ldacc)) \
  ORRERY_FLUSH_HALF(h##r##1, c##r##1, (acc + r * ldacc + 16))
  ORRERY_ROWS6(ORRERY_FLUSH)
#undef ORRERY_FLUSH
#undef ORRERY_FLUSH_HALF
#undef ORRERY_HIGH_HALF
#undef ORRERY_LOW_HALF
#undef ORRERY_WIDEN
}


// 16 int16 at `offset` of row r and of row r + 1 (`stride` apart), as one register.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), always_inline)) inline __m512i
TwoRows(const int16_t* row, int64_t stride, int64_t offset) {
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + offset));
  const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + stride + offset));
  return _mm512_inserti64x4(_mm512_castsi256_si512(x), y, 1);
}

// The sums of squares of TwoRows' two halves, in 64-bit lanes 0 and 4. Each 32-bit lane of
// madd is lo^2 + hi^2 <= 2^31 (exact as unsigned); the sums widen to 64 bits before adding.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), always_inline)) inline __m512i
RowPairSums(__m512i rows) {
  const __m512i s = _mm512_madd_epi16(rows, rows);
  __m512i t = _mm512_add_epi64(_mm512_and_si512(s, _mm512_set1_epi64(0xFFFFFFFF)),
                               _mm512_srli_epi64(s, 32));
  t = _mm512_add_epi64(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
  return _mm512_add_epi64(t, _mm512_shuffle_i64x2(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) void PackAPanelAvx512(
    const int16_t* row0, int64_t stride, int64_t granules, uint32_t* dst, int64_t* sq,
    int64_t sq_stride) {
  static_assert(kAvx512Mr == 6);
  // Output word w of a granule's 48 is row w % 6, pair w / 6. Rows 0-3 come from a two-source
  // permute of (row0 | row1) and (row2 | row3), rows 4-5 from (row4 | row5) under a mask.
  static constexpr auto kTables = [] {
    struct {
      int32_t lo[3][16], hi[3][16];
      uint16_t from_hi[3];
    } t{};
    for (int w = 0; w < 48; ++w) {
      const int q = w / 16, l = w % 16, p = w / 6, r = w % 6;
      t.lo[q][l] = r < 4 ? (r / 2) * 16 + (r % 2) * 8 + p : 0;
      t.hi[q][l] = r >= 4 ? (r - 4) * 8 + p : 0;
      if (r >= 4) t.from_hi[q] = static_cast<uint16_t>(t.from_hi[q] | (1u << l));
    }
    return t;
  }();
  __m512i lo_idx[3], hi_idx[3];
  for (int q = 0; q < 3; ++q) {
    lo_idx[q] = _mm512_loadu_si512(kTables.lo[q]);
    hi_idx[q] = _mm512_loadu_si512(kTables.hi[q]);
  }
  // Lanes 0 and 4 of a reduced row pair, gathered for rows (0, 1, 2, 3) then (4, 5).
  const __m512i pick = _mm512_setr_epi64(0, 4, 8, 12, 0, 4, 0, 0);
  for (int64_t g = 0; g < granules; ++g) {
    const __m512i z01 = TwoRows(row0, stride, 16 * g);
    const __m512i z23 = TwoRows(row0 + 2 * stride, stride, 16 * g);
    const __m512i z45 = TwoRows(row0 + 4 * stride, stride, 16 * g);
    uint32_t* out = dst + g * 48;
    for (int q = 0; q < 3; ++q) {
      __m512i v = _mm512_permutex2var_epi32(z01, lo_idx[q], z23);
      v = _mm512_mask_permutexvar_epi32(v, kTables.from_hi[q], hi_idx[q], z45);
      _mm512_storeu_si512(out + 16 * q, v);
    }
    __m512i sums = _mm512_permutex2var_epi64(RowPairSums(z01), pick, RowPairSums(z23));
    sums = _mm512_mask_permutexvar_epi64(sums, 0x30, pick, RowPairSums(z45));
    _mm512_mask_storeu_epi64(sq + g * sq_stride, 0x3F, sums);
  }
}

// Stores one K pair of a PackB panel (columns 0-15 in w0, 16-31 in w1) at `out` and adds each
// column's lo^2 + hi^2 (<= 2^31, widened before adding) to acc[c / 8] lane c % 8.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), always_inline)) inline void StoreBRow(
    __m512i w0, __m512i w1, uint32_t* out, __m512i acc[4]) {
  _mm512_storeu_si512(out, w0);
  _mm512_storeu_si512(out + 16, w1);
  const __m512i s0 = _mm512_madd_epi16(w0, w0), s1 = _mm512_madd_epi16(w1, w1);
  acc[0] = _mm512_add_epi64(acc[0], _mm512_cvtepu32_epi64(_mm512_castsi512_si256(s0)));
  acc[1] = _mm512_add_epi64(acc[1], _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(s0, 1)));
  acc[2] = _mm512_add_epi64(acc[2], _mm512_cvtepu32_epi64(_mm512_castsi512_si256(s1)));
  acc[3] = _mm512_add_epi64(acc[3], _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(s1, 1)));
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) void PackBPanelAvx512(
    const int16_t* col0, int64_t stride, int64_t pairs, uint32_t* dst, int64_t* sq,
    int64_t sq_stride) {
  static_assert(kAvx512Nr == 32);
  // unpack{lo,hi}_epi16 interleave within 128-bit lanes; these put the columns back in order.
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i second =
      _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int64_t p0 = 0; p0 < pairs; p0 += 8) {
    // Column sums of squares, widened to 64 bits: columns 8q to 8q + 7 in acc[q].
    __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                      _mm512_setzero_si512()};
    for (int64_t p = p0; p < p0 + 8; ++p) {
      const __m512i r0 = _mm512_loadu_si512(col0 + 2 * p * stride);
      const __m512i r1 = _mm512_loadu_si512(col0 + (2 * p + 1) * stride);
      const __m512i lo = _mm512_unpacklo_epi16(r0, r1), hi = _mm512_unpackhi_epi16(r0, r1);
      StoreBRow(_mm512_permutex2var_epi32(lo, first, hi), _mm512_permutex2var_epi32(lo, second, hi),
                dst + p * 32, acc);
    }
    int64_t* s = sq + (p0 / 8) * sq_stride;
    for (int q = 0; q < 4; ++q) _mm512_storeu_si512(s + 8 * q, acc[q]);
  }
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) void PackBPanelTransposedAvx512(
    const int16_t* col0, int64_t stride, int64_t granules, uint32_t* dst, int64_t* sq,
    int64_t sq_stride) {
  static_assert(kAvx512Nr == 32);
  for (int64_t g = 0; g < granules; ++g) {
    // Column c's 16 elements of granule g are its 8 packed words, in order: an 8 x 8 transpose
    // of 32-bit words per 8 columns turns them into 8 K pairs of those columns.
    __m256i pairs[4][8];
    for (int q = 0; q < 4; ++q) {
      __m256i r[8];
      for (int c = 0; c < 8; ++c) {
        r[c] = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(col0 + (8 * q + c) * stride + 16 * g));
      }
      __m256i t[8], u[8];
      for (int c = 0; c < 8; c += 2) {
        t[c] = _mm256_unpacklo_epi32(r[c], r[c + 1]);
        t[c + 1] = _mm256_unpackhi_epi32(r[c], r[c + 1]);
      }
      for (int c = 0; c < 8; c += 4) {
        u[c] = _mm256_unpacklo_epi64(t[c], t[c + 2]);
        u[c + 1] = _mm256_unpackhi_epi64(t[c], t[c + 2]);
        u[c + 2] = _mm256_unpacklo_epi64(t[c + 1], t[c + 3]);
        u[c + 3] = _mm256_unpackhi_epi64(t[c + 1], t[c + 3]);
      }
      for (int p = 0; p < 4; ++p) {
        pairs[q][p] = _mm256_permute2x128_si256(u[p], u[p + 4], 0x20);
        pairs[q][p + 4] = _mm256_permute2x128_si256(u[p], u[p + 4], 0x31);
      }
    }
    __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                      _mm512_setzero_si512()};
    for (int p = 0; p < 8; ++p) {
      StoreBRow(_mm512_inserti64x4(_mm512_castsi256_si512(pairs[0][p]), pairs[1][p], 1),
                _mm512_inserti64x4(_mm512_castsi256_si512(pairs[2][p]), pairs[3][p], 1),
                dst + (8 * g + p) * 32, acc);
    }
    int64_t* s = sq + g * sq_stride;
    for (int q = 0; q < 4; ++q) _mm512_storeu_si512(s + 8 * q, acc[q]);
  }
}

#undef ORRERY_ROWS6
#undef ORRERY_ROWS3

__attribute__((target("avx2,fma"))) void RoundRowAvx2(const int64_t* acc, int64_t n, int shift,
                                                      bool stochastic, uint32_t block_key,
                                                      uint32_t counter_lo, int16_t* out) {
  // AVX2 lacks 64-bit arithmetic shifts, unsigned compares and min/max: each is built from
  // signed compares of values known to be non-negative, or from the identity
  // v >> s == ((v ^ sign) >>> s) ^ sign.
  const __m128i count = _mm_cvtsi32_si128(shift);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i rem_mask = _mm256_set1_epi64x(static_cast<int64_t>((uint64_t{1} << shift) - 1));
  const __m256i half = _mm256_set1_epi64x(static_cast<int64_t>(uint64_t{1} << (shift - 1)));
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i lo = _mm256_set1_epi64x(kFixedMin), hi = _mm256_set1_epi64x(kFixedMax);
  const __m128i to_threshold = _mm_cvtsi32_si128(shift <= 32 ? 32 - shift : shift - 32);
  const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m256i mult = _mm256_set1_epi32(static_cast<int>(kCounterMultiplier));
  __m256i h = _mm256_add_epi32(
      _mm256_mullo_epi32(_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(counter_lo)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
                         mult),
      _mm256_set1_epi32(static_cast<int>(block_key)));
  const __m256i step = _mm256_set1_epi32(static_cast<int>(8u * kCounterMultiplier));
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256i r = h;
    if (stochastic) {
      r = Mix32x8(h);
      h = _mm256_add_epi32(h, step);
    }
    __m128i packed[2];
    for (int q = 0; q < 2; ++q) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + j + 4 * q));
      const __m256i sign = _mm256_cmpgt_epi64(zero, v);
      const __m256i floor =
          _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(v, sign), count), sign);
      const __m256i rem = _mm256_and_si256(v, rem_mask);
      __m256i up;  // all ones where rounding up
      if (stochastic) {
        const __m256i random = _mm256_cvtepu32_epi64(q == 0 ? _mm256_castsi256_si128(r)
                                                            : _mm256_extracti128_si256(r, 1));
        const __m256i threshold =
            shift <= 32 ? _mm256_sll_epi64(rem, to_threshold) : _mm256_srl_epi64(rem, to_threshold);
        up = _mm256_cmpgt_epi64(threshold, random);
      } else {
        const __m256i odd = _mm256_cmpeq_epi64(_mm256_and_si256(floor, one), one);
        up = _mm256_or_si256(_mm256_cmpgt_epi64(rem, half),
                             _mm256_and_si256(_mm256_cmpeq_epi64(rem, half), odd));
      }
      __m256i rounded = _mm256_sub_epi64(floor, up);
      rounded = _mm256_blendv_epi8(rounded, lo, _mm256_cmpgt_epi64(lo, rounded));
      rounded = _mm256_blendv_epi8(rounded, hi, _mm256_cmpgt_epi64(rounded, hi));
      packed[q] = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(rounded, low_dwords));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm_packs_epi32(packed[0], packed[1]));
  }
  for (; j < n; ++j) {
    const uint32_t c = counter_lo + static_cast<uint32_t>(j);
    out[j] =
        RoundAccumulator(acc[j], shift, stochastic ? Rounding::kStochastic : Rounding::kNearest,
                         Mix32(c * kCounterMultiplier + block_key));
  }
}

__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) void RoundRowAvx512(
    const int64_t* acc, int64_t n, int shift, bool stochastic, uint32_t block_key,
    uint32_t counter_lo, int16_t* out) {
  const __m128i count = _mm_cvtsi32_si128(shift);
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i rem_mask = _mm512_set1_epi64(static_cast<int64_t>((uint64_t{1} << shift) - 1));
  const __m512i half = _mm512_set1_epi64(static_cast<int64_t>(uint64_t{1} << (shift - 1)));
  const __m128i to_threshold = _mm_cvtsi32_si128(shift <= 32 ? 32 - shift : shift - 32);
  // The hash runs in the low 32 bits of 64-bit lanes: its 32-bit shifts, multiplies and adds
  // keep the high halves zero, so each result is already the zero-extended random.
  const __m512i mult = _mm512_set1_epi64(kCounterMultiplier);
  const __m512i counters =
      _mm512_add_epi32(_mm512_set1_epi64(counter_lo), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
  __m512i h = _mm512_add_epi32(_mm512_mullo_epi32(counters, mult), _mm512_set1_epi64(block_key));
  const __m512i step = _mm512_set1_epi64(static_cast<uint32_t>(8u * kCounterMultiplier));
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512i v = _mm512_loadu_si512(acc + j);
    const __m512i floor = _mm512_sra_epi64(v, count);
    const __m512i rem = _mm512_and_si512(v, rem_mask);
    __mmask8 up;
    if (stochastic) {
      const __m512i r = Mix32x16(h);
      const __m512i threshold =
          shift <= 32 ? _mm512_sll_epi64(rem, to_threshold) : _mm512_srl_epi64(rem, to_threshold);
      up = _mm512_cmplt_epu64_mask(r, threshold);
      h = _mm512_add_epi32(h, step);
    } else {
      up = _mm512_cmpgt_epu64_mask(rem, half) |
           (_mm512_cmpeq_epi64_mask(rem, half) & _mm512_test_epi64_mask(floor, one));
    }
    // Signed saturation to int16 is RoundAccumulator's clamp to [kFixedMin, kFixedMax].
    const __m512i rounded = _mm512_mask_add_epi64(floor, up, floor, one);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm512_cvtsepi64_epi16(rounded));
  }
  for (; j < n; ++j) {
    const uint32_t c = counter_lo + static_cast<uint32_t>(j);
    out[j] =
        RoundAccumulator(acc[j], shift, stochastic ? Rounding::kStochastic : Rounding::kNearest,
                         Mix32(c * kCounterMultiplier + block_key));
  }
}

}  // namespace orrery::quant::internal

#else

namespace orrery::quant::internal {
void GemmKernelAvx2(const int32_t*, const int16_t*, const int64_t*, int64_t, int64_t*, int64_t,
                    bool) {}
void GemmKernelAvx512(const int32_t*, const int16_t*, const int64_t*, int64_t, int64_t*, int64_t,
                      bool) {}
void RoundRowAvx512(const int64_t*, int64_t, int, bool, uint32_t, uint32_t, int16_t*) {}
void PackAPanelAvx512(const int16_t*, int64_t, int64_t, uint32_t*, int64_t*, int64_t) {}
void PackBPanelAvx512(const int16_t*, int64_t, int64_t, uint32_t*, int64_t*, int64_t) {}
void PackBPanelTransposedAvx512(const int16_t*, int64_t, int64_t, uint32_t*, int64_t*, int64_t) {}
void RoundRowAvx2(const int64_t*, int64_t, int, bool, uint32_t, uint32_t, int16_t*) {}
}  // namespace orrery::quant::internal

#endif
