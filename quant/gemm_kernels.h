// Internal to quant/: the packed-panel micro-kernels behind fixed_gemm.cc.
//
// Packed A panel: for each K pair p, MR int32 words, word r = (a[i0+r][2p] | a[i0+r][2p+1] << 16).
// Packed B panel: for each K pair p, NR columns of two int16 (b[2p][j], b[2p+1][j]).
// A kernel multiplies one A panel by one B panel over consecutive K blocks of block_pairs[i]
// pairs each, in int32 lanes: the caller guarantees that no block's true sum per lane exceeds
// 2^31 - 1 - 65535 in magnitude (see GreedyBlocks). Between blocks the kernel moves each lane's
// high bits out to a second int32 register (hi += lane >> 16, lane &= 0xFFFF, which stays exact
// for < 2^16 blocks). The exact MR x NR
// tile lands in `acc` (row stride ldacc): acc = tile if `first`, else acc += tile.
#ifndef ORRERY_QUANT_GEMM_KERNELS_H_
#define ORRERY_QUANT_GEMM_KERNELS_H_

#include <cstdint>
#include <vector>

#include "quant/fixed_gemm.h"

namespace orrery::quant::internal {

inline constexpr int kAvx2Mr = 3;
inline constexpr int kAvx2Nr = 16;
inline constexpr int kAvx512Mr = 6;
inline constexpr int kAvx512Nr = 32;

// Splits K into blocks (ends, in K pairs) over which every int32 lane of a * b provably stays in
// range: by Cauchy-Schwarz |sum a_k b_k| <= |a| |b|, so a block is safe when
// max_i |A_i,block|^2 * max_j |B_block,j|^2 <= (2^31 - 1)^2. Blocks hold at most 512 K elements
// and end on multiples of 16. Empty when K is 0 or even one 16-element granule is not provably
// safe (the caller then uses the int64 path).
std::vector<int64_t> PlanKBlocks(const FixedMatrixView& a, const FixedMatrixView& b);
// The greedy split given squared norms per 16-element granule g: a_sq[g * m + i] for rows of A,
// b_sq[g * n + j] for columns of B.
std::vector<int64_t> GreedyBlocks(const int64_t* a_sq, int64_t m, const int64_t* b_sq, int64_t n,
                                  int64_t k, GemmWorkspace::Buffers* scratch);
// As above, using `scratch` for its temporaries.
std::vector<int64_t> PlanKBlocks(const FixedMatrixView& a, const FixedMatrixView& b,
                                 GemmWorkspace::Buffers* scratch);

// Packs a and b into scratch's a_packed and b_packed for `isa` (kAvx2 or kAvx512: PackA's and
// PackB's panel layouts), taking the squared norms per granule in the same pass, and returns
// GreedyBlocks' split for them: the same as PlanKBlocks(a, b).
std::vector<int64_t> PackAndPlan(const FixedMatrixView& a, const FixedMatrixView& b, Isa isa,
                                 GemmWorkspace::Buffers* scratch);

// Rounds acc[0, n) to out[0, n) exactly as RoundAccumulator does (fixed_gemm.h), drawing
// Mix32((counter_lo + j) * kCounterMultiplier + block_key) for element j; requires shift > 0
// and counter_lo + n <= 2^32 (no 2^32-block crossing).
void RoundRowAvx512(const int64_t* acc, int64_t n, int shift, bool stochastic, uint32_t block_key,
                    uint32_t counter_lo, int16_t* out);
void RoundRowAvx2(const int64_t* acc, int64_t n, int shift, bool stochastic, uint32_t block_key,
                  uint32_t counter_lo, int16_t* out);

// Packs granules [0, granules) (16 K elements each) of the kAvx512Mr consecutive rows of A
// starting at `row0` (row stride `stride`, not transposed) into a PackA panel `dst`, and writes
// each row's sum of squares over granule g to sq[g * sq_stride + r].
void PackAPanelAvx512(const int16_t* row0, int64_t stride, int64_t granules, uint32_t* dst,
                      int64_t* sq, int64_t sq_stride);
// Packs pairs [0, pairs) of the kAvx512Nr columns of B starting at `col0` (row stride `stride`,
// not transposed; 2 * pairs <= K) into a PackB panel `dst`, and writes each column's sum of
// squares over granule g to sq[g * sq_stride + c]; `pairs` is a multiple of 8.
void PackBPanelAvx512(const int16_t* col0, int64_t stride, int64_t pairs, uint32_t* dst,
                      int64_t* sq, int64_t sq_stride);

// As PackBPanelAvx512 for a transposed B: column c of the panel is the stored row
// `col0 + c * stride`, its K elements contiguous; packs granules [0, granules).
void PackBPanelTransposedAvx512(const int16_t* col0, int64_t stride, int64_t granules,
                                uint32_t* dst, int64_t* sq, int64_t sq_stride);

void GemmKernelAvx2(const int32_t* a, const int16_t* b, const int64_t* block_pairs, int64_t blocks,
                    int64_t* acc, int64_t ldacc, bool first);
void GemmKernelAvx512(const int32_t* a, const int16_t* b, const int64_t* block_pairs,
                      int64_t blocks, int64_t* acc, int64_t ldacc, bool first);

}  // namespace orrery::quant::internal

#endif  // ORRERY_QUANT_GEMM_KERNELS_H_
