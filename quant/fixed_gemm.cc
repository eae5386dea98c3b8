#include "quant/fixed_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/multiversion.h"
#include "quant/gemm_kernels.h"

namespace orrery::quant {
namespace {

// Output tile handled by one task; multiples of every kernel's MR and NR.
constexpr int64_t kTileRows = 96;
constexpr int64_t kTileCols = 256;
// K elements per block at most (cache), and the granule the overflow bound is computed on.
constexpr int64_t kMaxBlockElems = 512;
constexpr size_t kChunkPairs = 512;
constexpr int64_t kGranule = 16;

// The O(mk + kn) helpers below are multiversioned (base/multiversion.h).

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// A grow-only 64-byte-aligned buffer.
class Scratch {
 public:
  template <typename T>
  T* Get(int64_t count) {
    size_t bytes = static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T);
    bytes = (bytes + 63) / 64 * 64;
    if (bytes > capacity_) {
      data_.reset(static_cast<std::byte*>(std::aligned_alloc(64, bytes)));
      capacity_ = bytes;
    }
    return reinterpret_cast<T*>(data_.get());
  }
  // What the last Get returned.
  template <typename T>
  T* Data() const {
    return reinterpret_cast<T*>(data_.get());
  }

 private:
  std::unique_ptr<std::byte[], FreeDeleter> data_;
  size_t capacity_ = 0;
};

}  // namespace

struct GemmWorkspace::Buffers {
  Scratch a_packed, b_packed;
  std::vector<Scratch> acc;  // one per thread
  std::vector<int64_t> a_sq, b_sq, a_run, b_run;
};

namespace {

absl::Status ValidateOperand(const FixedMatrixView& v, const char* name) {
  if (v.rows < 0 || v.cols < 0) {
    return absl::InvalidArgumentError(absl::StrCat("fixed GEMM: ", name, " has negative shape"));
  }
  if (v.rows > 0 && v.cols > 0) {
    if (v.data == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("fixed GEMM: ", name, " data is null"));
    }
    const int64_t stored_cols = v.transposed ? v.rows : v.cols;
    if (v.stride < stored_cols) {
      return absl::InvalidArgumentError(absl::StrCat("fixed GEMM: ", name, " stride ", v.stride,
                                                     " is less than its stored row length ",
                                                     stored_cols));
    }
  }
  if (v.format.fl < 0 || v.format.fl > kMaxFractionalBits) {
    return absl::InvalidArgumentError(absl::StrCat("fixed GEMM: ", name, " has invalid FL"));
  }
  return absl::OkStatus();
}

absl::Status Validate(const FixedMatrixView& a, const FixedMatrixView& b, const void* c,
                      int64_t ldc) {
  if (absl::Status s = ValidateOperand(a, "A"); !s.ok()) return s;
  if (absl::Status s = ValidateOperand(b, "B"); !s.ok()) return s;
  if (a.cols != b.rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("fixed GEMM: A is ", a.rows, "x", a.cols, " but B is ", b.rows, "x", b.cols));
  }
  if (a.rows > 0 && b.cols > 0) {
    if (c == nullptr) return absl::InvalidArgumentError("fixed GEMM: C is null");
    if (ldc < b.cols) {
      return absl::InvalidArgumentError(
          absl::StrCat("fixed GEMM: ldc ", ldc, " is less than n = ", b.cols));
    }
  }
  return absl::OkStatus();
}

uint32_t Load32(const int16_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

uint32_t Pair(int16_t lo, int16_t hi) {
  return static_cast<uint32_t>(static_cast<uint16_t>(lo)) |
         (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16);
}

// lo^2 + hi^2 of the two int16 in a packed word: at most 2^31, exact in uint32.
inline uint32_t SquarePair(uint32_t word) {
  const int32_t lo = static_cast<int16_t>(word & 0xFFFF);
  const int32_t hi = static_cast<int16_t>(word >> 16);
  return static_cast<uint32_t>(lo * lo) + static_cast<uint32_t>(hi * hi);
}

// An operand as the packers see it: `lines` lines of K elements (A's rows, B's columns), element
// e of line l at data[l * line_stride + e * k_stride]. A packed panel is the same for both: per
// K pair p, one word (e[2p] | e[2p+1] << 16) of each of its lines.
struct KLines {
  const int16_t* data;
  int64_t lines, k, line_stride, k_stride;

  static KLines RowsOf(const FixedMatrixView& a) {
    return a.transposed ? KLines{a.data, a.rows, a.cols, 1, a.stride}
                        : KLines{a.data, a.rows, a.cols, a.stride, 1};
  }
  static KLines ColumnsOf(const FixedMatrixView& b) {
    return b.transposed ? KLines{b.data, b.cols, b.rows, b.stride, 1}
                        : KLines{b.data, b.cols, b.rows, 1, b.stride};
  }

  // Word p of line l, the odd K tail paired with zero.
  uint32_t Word(int64_t l, int64_t p) const {
    const int16_t* e = data + l * line_stride + 2 * p * k_stride;
    return Pair(e[0], 2 * p + 1 < k ? e[k_stride] : 0);
  }
};

// Packs `v` into panels of kWidth lines: [panel][pair][kWidth] words, padding lines zero, and
// writes sq[g * panels * kWidth + l] = the sum of squares of line l over granule g. One pass:
// the squares are taken from the words as they are stored. With `avx512`, whole granules of
// full panels go to the AVX-512 packers (gemm_kernels.h), the rest is done here.
template <int kWidth>
ORRERY_MULTIVERSION void PackLines(const KLines& v, int64_t pairs, uint32_t* out, int64_t* sq,
                                   bool avx512) {
  constexpr int64_t kGranulePairs = kGranule / 2;
  const int64_t full = v.k / 2;  // pairs with both elements
  const int64_t panels = (v.lines + kWidth - 1) / kWidth, sq_stride = panels * kWidth;
  for (int64_t panel = 0; panel < panels; ++panel) {
    uint32_t* dst = out + panel * pairs * kWidth;
    const int64_t l0 = panel * kWidth;
    const bool whole = l0 + kWidth <= v.lines;
    const int16_t* first = v.data + l0 * v.line_stride;
    int64_t vector_granules = 0;  // whole granules (16 K elements) done by an AVX-512 packer
    if (avx512 && whole && (kWidth == internal::kAvx512Mr || kWidth == internal::kAvx512Nr)) {
      const int64_t granules = v.k / kGranule;
      if (v.k_stride == 1) {
        vector_granules = granules;
        (kWidth == internal::kAvx512Mr ? internal::PackAPanelAvx512
                                       : internal::PackBPanelTransposedAvx512)(
            first, v.line_stride, granules, dst, sq + l0, sq_stride);
      } else if (v.line_stride == 1 && kWidth == internal::kAvx512Nr) {
        vector_granules = granules;
        internal::PackBPanelAvx512(first, v.k_stride, granules * kGranulePairs, dst, sq + l0,
                                   sq_stride);
      }
    }
    for (int64_t g = vector_granules, p0 = g * kGranulePairs; p0 < pairs;
         p0 += kGranulePairs, ++g) {
      const int64_t p1 = std::min(pairs, p0 + kGranulePairs);
      uint64_t sums[kWidth] = {};
      int64_t p = p0;
      if (whole && v.k_stride == 1) {  // each line's pair is one load
        for (; p < std::min(p1, full); ++p) {
          for (int l = 0; l < kWidth; ++l) {
            const uint32_t word = Load32(first + l * v.line_stride + 2 * p);
            dst[p * kWidth + l] = word;
            sums[l] += SquarePair(word);
          }
        }
      } else if (whole && v.line_stride == 1) {  // the panel's lines side by side in two rows
        for (; p < std::min(p1, full); ++p) {
          const int16_t* r0 = first + 2 * p * v.k_stride;
          const int16_t* r1 = r0 + v.k_stride;
          for (int l = 0; l < kWidth; ++l) {
            const uint32_t word = Pair(r0[l], r1[l]);
            dst[p * kWidth + l] = word;
            sums[l] += SquarePair(word);
          }
        }
      }
      for (; p < p1; ++p) {
        for (int l = 0; l < kWidth; ++l) {
          const uint32_t word = l0 + l < v.lines ? v.Word(l0 + l, p) : 0;
          dst[p * kWidth + l] = word;
          sums[l] += SquarePair(word);
        }
      }
      int64_t* s = sq + g * sq_stride + l0;
      for (int l = 0; l < kWidth; ++l) s[l] = static_cast<int64_t>(sums[l]);
    }
  }
}

using Kernel = void (*)(const int32_t*, const int16_t*, const int64_t*, int64_t, int64_t*, int64_t,
                        bool);

// Computes exact int64 tiles of a * b and hands each to sink(row0, col0, rows, cols, acc, ldacc).
// Returns false (having done nothing) when the int32 blocking cannot be proven safe.
template <typename Sink>
bool RunBlocked(const FixedMatrixView& a, const FixedMatrixView& b, Isa isa, int threads,
                GemmWorkspace::Buffers& scratch, const Sink& sink) {
  const int mr = isa == Isa::kAvx512 ? internal::kAvx512Mr : internal::kAvx2Mr;
  const int nr = isa == Isa::kAvx512 ? internal::kAvx512Nr : internal::kAvx2Nr;
  const Kernel kernel = isa == Isa::kAvx512 ? internal::GemmKernelAvx512 : internal::GemmKernelAvx2;
  const int64_t m = a.rows, n = b.cols, k = a.cols;
  const int64_t pairs = (k + 1) / 2;
  const std::vector<int64_t> block_ends = internal::PackAndPlan(a, b, isa, &scratch);
  const int32_t* a_packed = scratch.a_packed.Data<int32_t>();  // as PackAndPlan left them
  const int16_t* b_packed = scratch.b_packed.Data<int16_t>();
  if (block_ends.empty()) return false;
  // Blocks grouped into chunks of at most kChunkPairs K pairs: one kernel call per chunk keeps a
  // B micro-panel of the chunk in L1/L2.
  std::vector<int64_t> block_pairs(block_ends.size());
  std::vector<int64_t> chunk_starts = {0};
  for (size_t i = 0, chunk_pairs = 0; i < block_ends.size(); ++i) {
    block_pairs[i] = block_ends[i] - (i == 0 ? 0 : block_ends[i - 1]);
    if (chunk_pairs > 0 && chunk_pairs + block_pairs[i] > kChunkPairs) {
      chunk_starts.push_back(static_cast<int64_t>(i));
      chunk_pairs = 0;
    }
    chunk_pairs += block_pairs[i];
  }
  chunk_starts.push_back(static_cast<int64_t>(block_ends.size()));

  const int64_t tiles_m = (m + kTileRows - 1) / kTileRows;
  const int64_t tiles_n = (n + kTileCols - 1) / kTileCols;
  const int64_t tiles = tiles_m * tiles_n;
  if (tiles <= 1) threads = 1;
  if (scratch.acc.size() < static_cast<size_t>(threads)) scratch.acc.resize(threads);
  auto run_tiles = [&](int thread) {
    int64_t* acc = scratch.acc[static_cast<size_t>(thread)].Get<int64_t>(kTileRows * kTileCols);
    auto run_tile = [&](int64_t t) {
      const int64_t row0 = (t / tiles_n) * kTileRows, col0 = (t % tiles_n) * kTileCols;
      const int64_t rows = std::min(kTileRows, m - row0), cols = std::min(kTileCols, n - col0);
      const int64_t row_panels = (rows + mr - 1) / mr, col_panels = (cols + nr - 1) / nr;
      for (size_t ch = 0; ch + 1 < chunk_starts.size(); ++ch) {
        const int64_t first_block = chunk_starts[ch], end_block = chunk_starts[ch + 1];
        const int64_t p0 = first_block == 0 ? 0 : block_ends[first_block - 1];
        for (int64_t jp = 0; jp < col_panels; ++jp) {
          const int16_t* bp = b_packed + ((col0 / nr + jp) * pairs + p0) * nr * 2;
          for (int64_t ip = 0; ip < row_panels; ++ip) {
            const int32_t* ap = a_packed + ((row0 / mr + ip) * pairs + p0) * mr;
            kernel(ap, bp, block_pairs.data() + first_block, end_block - first_block,
                   acc + ip * mr * kTileCols + jp * nr, kTileCols, ch == 0);
          }
        }
      }
      sink(row0, col0, rows, cols, acc, kTileCols);
    };
    if (threads == 1) {
      for (int64_t t = 0; t < tiles; ++t) run_tile(t);
      return;
    }
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tiles; ++t) run_tile(t);
  };
  if (threads == 1) {
    run_tiles(0);  // no OpenMP region: its fork costs more than a small GEMM
  } else {
#pragma omp parallel num_threads(threads)
    run_tiles(omp_get_thread_num());
  }
  return true;
}

// The int64 path: portable, and the fallback when int32 blocking is not provably safe.
template <typename Sink>
void RunPortable(const FixedMatrixView& a, const FixedMatrixView& b, const Sink& sink) {
  const int64_t m = a.rows, n = b.cols, k = a.cols;
  std::vector<int64_t> row(static_cast<size_t>(n));
  for (int64_t i = 0; i < m; ++i) {
    std::fill(row.begin(), row.end(), 0);
    for (int64_t kk = 0; kk < k; ++kk) {
      const int64_t av = a.At(i, kk);
      if (av == 0) continue;
      for (int64_t j = 0; j < n; ++j) row[j] += av * b.At(kk, j);
    }
    sink(i, 0, 1, n, row.data(), n);
  }
}

template <typename Sink>
void Run(const FixedMatrixView& a, const FixedMatrixView& b, const GemmOptions& options,
         const Sink& sink) {
  const Isa isa = ResolveIsa(options.isa);
  if (isa != Isa::kPortable && a.cols > 0) {
    std::optional<GemmWorkspace> local;
    GemmWorkspace* workspace = options.workspace;
    if (workspace == nullptr) workspace = &local.emplace();
    if (RunBlocked(a, b, isa, std::max(1, options.threads), workspace->buffers(), sink)) return;
  }
  RunPortable(a, b, sink);
}

// out[g * rows + r] = sum of squares of stored row r over columns [16g, 16g + 16).
ORRERY_MULTIVERSION void SquaresAlongRows(const int16_t* data, int64_t rows, int64_t cols,
                                          int64_t stride, int64_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const int16_t* row = data + r * stride;
    for (int64_t c0 = 0, g = 0; c0 < cols; c0 += kGranule, ++g) {
      const int64_t c1 = std::min(cols, c0 + kGranule);
      int64_t sum = 0;
      for (int64_t c = c0; c < c1; ++c) sum += int32_t{row[c]} * row[c];
      out[g * rows + r] = sum;
    }
  }
}

// out[g * cols + c] = sum of squares of stored column c over rows [16g, 16g + 16).
ORRERY_MULTIVERSION void SquaresAcrossRows(const int16_t* data, int64_t rows, int64_t cols,
                                           int64_t stride, int64_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const int16_t* row = data + r * stride;
    int64_t* dst = out + (r / kGranule) * cols;
    for (int64_t c = 0; c < cols; ++c) dst[c] += int32_t{row[c]} * row[c];
  }
}

}  // namespace

GemmWorkspace::GemmWorkspace() : buffers_(std::make_unique<Buffers>()) {}
GemmWorkspace::~GemmWorkspace() = default;
GemmWorkspace::GemmWorkspace(GemmWorkspace&&) noexcept = default;
GemmWorkspace& GemmWorkspace::operator=(GemmWorkspace&&) noexcept = default;

namespace internal {

std::vector<int64_t> GreedyBlocks(const int64_t* a_sq, int64_t m, const int64_t* b_sq, int64_t n,
                                  int64_t k, GemmWorkspace::Buffers* scratch) {
  const int64_t granules = (k + kGranule - 1) / kGranule;
  if (granules == 0) return {};
  __extension__ using Wide = unsigned __int128;
  // Kernels restart a block's lanes from up to 0xFFFF (see gemm_kernels.h).
  constexpr uint64_t kLaneLimit = 0x7FFFFFFF - 0xFFFF;
  const Wide limit = static_cast<Wide>(kLaneLimit) * kLaneLimit;
  std::vector<int64_t>& a_run = scratch->a_run;
  std::vector<int64_t>& b_run = scratch->b_run;
  a_run.resize(static_cast<size_t>(m));
  b_run.resize(static_cast<size_t>(n));
  std::vector<int64_t> ends;
  const int64_t max_granules = kMaxBlockElems / kGranule;
  int64_t start = 0;
  while (start < granules) {
    std::fill(a_run.begin(), a_run.end(), 0);
    std::fill(b_run.begin(), b_run.end(), 0);
    int64_t g = start;
    while (g < granules && g - start < max_granules) {
      int64_t a_max = 0, b_max = 0;
      for (int64_t i = 0; i < m; ++i) a_max = std::max(a_max, a_run[i] + a_sq[g * m + i]);
      for (int64_t j = 0; j < n; ++j) b_max = std::max(b_max, b_run[j] + b_sq[g * n + j]);
      if (static_cast<Wide>(a_max) * static_cast<Wide>(b_max) > limit) break;
      for (int64_t i = 0; i < m; ++i) a_run[i] += a_sq[g * m + i];
      for (int64_t j = 0; j < n; ++j) b_run[j] += b_sq[g * n + j];
      ++g;
    }
    if (g == start) return {};
    ends.push_back(std::min(g * kGranule, k + 1) / 2);  // in pairs; last block takes the odd tail
    start = g;
  }
  ends.back() = (k + 1) / 2;
  return ends;
}

std::vector<int64_t> PackAndPlan(const FixedMatrixView& a, const FixedMatrixView& b, Isa isa,
                                 GemmWorkspace::Buffers* scratch) {
  const bool avx512 = isa == Isa::kAvx512;
  const int mr = avx512 ? kAvx512Mr : kAvx2Mr, nr = avx512 ? kAvx512Nr : kAvx2Nr;
  const int64_t m = a.rows, n = b.cols, k = a.cols;
  const int64_t pairs = (k + 1) / 2, granules = (k + kGranule - 1) / kGranule;
  const int64_t a_panels = (m + mr - 1) / mr, b_panels = (n + nr - 1) / nr;
  int32_t* a_packed = scratch->a_packed.Get<int32_t>(a_panels * pairs * mr);
  int16_t* b_packed = scratch->b_packed.Get<int16_t>(b_panels * pairs * nr * 2);
  scratch->a_sq.resize(static_cast<size_t>(granules * a_panels * mr));
  scratch->b_sq.resize(static_cast<size_t>(granules * b_panels * nr));
  uint32_t* a_words = reinterpret_cast<uint32_t*>(a_packed);
  uint32_t* b_words = reinterpret_cast<uint32_t*>(b_packed);
  if (avx512) {
    PackLines<kAvx512Mr>(KLines::RowsOf(a), pairs, a_words, scratch->a_sq.data(), true);
    PackLines<kAvx512Nr>(KLines::ColumnsOf(b), pairs, b_words, scratch->b_sq.data(), true);
  } else {
    PackLines<kAvx2Mr>(KLines::RowsOf(a), pairs, a_words, scratch->a_sq.data(), false);
    PackLines<kAvx2Nr>(KLines::ColumnsOf(b), pairs, b_words, scratch->b_sq.data(), false);
  }
  return GreedyBlocks(scratch->a_sq.data(), a_panels * mr, scratch->b_sq.data(), b_panels * nr, k,
                      scratch);
}

std::vector<int64_t> PlanKBlocks(const FixedMatrixView& a, const FixedMatrixView& b) {
  GemmWorkspace workspace;
  return PlanKBlocks(a, b, &workspace.buffers());
}

std::vector<int64_t> PlanKBlocks(const FixedMatrixView& a, const FixedMatrixView& b,
                                 GemmWorkspace::Buffers* scratch) {
  const int64_t m = a.rows, n = b.cols, k = a.cols;
  const int64_t granules = (k + kGranule - 1) / kGranule;
  if (granules == 0) return {};
  std::vector<int64_t>& a_sq = scratch->a_sq;  // [granule][row]
  std::vector<int64_t>& b_sq = scratch->b_sq;  // [granule][col]
  a_sq.resize(static_cast<size_t>(granules * m));
  b_sq.assign(static_cast<size_t>(granules * n), 0);
  if (a.transposed) std::fill(a_sq.begin(), a_sq.end(), 0);
  if (b.transposed) std::fill(b_sq.begin(), b_sq.end(), 0);
  if (a.transposed) {
    SquaresAcrossRows(a.data, k, m, a.stride, a_sq.data());
  } else {
    SquaresAlongRows(a.data, m, k, a.stride, a_sq.data());
  }
  if (b.transposed) {
    SquaresAlongRows(b.data, n, k, b.stride, b_sq.data());
  } else {
    SquaresAcrossRows(b.data, k, n, b.stride, b_sq.data());
  }
  return GreedyBlocks(a_sq.data(), m, b_sq.data(), n, k, scratch);
}

}  // namespace internal

int16_t RoundAccumulator(int64_t acc, int shift, Rounding rounding, uint32_t random) {
  int64_t v;
  if (shift <= 0) {
    if (acc > kFixedMax) return static_cast<int16_t>(kFixedMax);
    if (acc < kFixedMin) return static_cast<int16_t>(kFixedMin);
    v = acc * (int64_t{1} << -shift);
  } else {
    const int64_t floor = acc >> shift;  // arithmetic: rounds toward -infinity
    const uint64_t rem = static_cast<uint64_t>(acc) & ((uint64_t{1} << shift) - 1);
    bool up;
    if (rounding == Rounding::kNearest) {
      const uint64_t half = uint64_t{1} << (shift - 1);
      up = rem > half || (rem == half && (floor & 1) != 0);
    } else {
      const uint64_t threshold = shift <= 32 ? rem << (32 - shift) : rem >> (shift - 32);
      up = random < threshold;
    }
    v = floor + (up ? 1 : 0);
  }
  return static_cast<int16_t>(std::clamp<int64_t>(v, kFixedMin, kFixedMax));
}

namespace {

using VectorRound = void (*)(const int64_t*, int64_t, int, bool, uint32_t, uint32_t, int16_t*);

// The vector rounding kernel for `isa`, or null (portable, or shift <= 0: a plain clamp).
VectorRound VectorRoundFor(Isa isa, int shift) {
  if (shift <= 0) return nullptr;
  isa = ResolveIsa(isa);
  if (isa == Isa::kAvx512) return internal::RoundRowAvx512;
  if (isa == Isa::kAvx2) return internal::RoundRowAvx2;
  return nullptr;
}

// Rounds in[0, n) to out as RoundAccumulator does, element j drawing counter `counter0 + j` of
// `key`: with the vector kernel where the counters do not cross a 2^32 block.
void RoundSpan(const int64_t* in, int64_t n, int shift, Rounding rounding, uint64_t key,
               uint64_t counter0, VectorRound vector_round, int16_t* out) {
  const uint32_t counter_lo = static_cast<uint32_t>(counter0);
  if (vector_round != nullptr &&
      static_cast<uint64_t>(counter_lo) + static_cast<uint64_t>(n) <= (uint64_t{1} << 32)) {
    vector_round(in, n, shift, rounding == Rounding::kStochastic,
                 BlockKey(key, static_cast<uint32_t>(counter0 >> 32)), counter_lo, out);
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t random = rounding == Rounding::kStochastic
                                ? CounterRandom(key, counter0 + static_cast<uint64_t>(j))
                                : 0;
    out[j] = RoundAccumulator(in[j], shift, rounding, random);
  }
}

}  // namespace

void RoundAccumulators(std::span<const int64_t> acc, int shift, Rounding rounding,
                       RandomStream stream, std::span<int16_t> out, Isa isa) {
  const size_t n = std::min(acc.size(), out.size());
  RoundSpan(acc.data(), static_cast<int64_t>(n), shift, rounding, stream.key, stream.offset,
            VectorRoundFor(isa, shift), out.data());
}

absl::Status FixedGemm(const FixedMatrixView& a, const FixedMatrixView& b, FixedFormat out_format,
                       const GemmOptions& options, int16_t* c, int64_t ldc) {
  if (absl::Status s = Validate(a, b, c, ldc); !s.ok()) return s;
  if (out_format.fl < 0 || out_format.fl > kMaxFractionalBits) {
    return absl::InvalidArgumentError("fixed GEMM: output format has invalid FL");
  }
  const int shift = a.format.fl + b.format.fl - out_format.fl;
  const int64_t n = b.cols;
  const Rounding rounding = options.rounding;
  const RandomStream stream = options.stream;
  const VectorRound vector_round = VectorRoundFor(options.isa, shift);
  auto sink = [&](int64_t row0, int64_t col0, int64_t rows, int64_t cols, const int64_t* acc,
                  int64_t ldacc) {
    for (int64_t r = 0; r < rows; ++r) {
      RoundSpan(acc + r * ldacc, cols, shift, rounding, stream.key,
                stream.offset + static_cast<uint64_t>((row0 + r) * n + col0), vector_round,
                c + (row0 + r) * ldc + col0);
    }
  };
  Run(a, b, options, sink);
  return absl::OkStatus();
}

absl::Status FixedGemmExact(const FixedMatrixView& a, const FixedMatrixView& b,
                            const GemmOptions& options, int64_t* c, int64_t ldc) {
  if (absl::Status s = Validate(a, b, c, ldc); !s.ok()) return s;
  auto sink = [&](int64_t row0, int64_t col0, int64_t rows, int64_t cols, const int64_t* acc,
                  int64_t ldacc) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(c + (row0 + r) * ldc + col0, acc + r * ldacc,
                  static_cast<size_t>(cols) * sizeof(int64_t));
    }
  };
  Run(a, b, options, sink);
  return absl::OkStatus();
}

}  // namespace orrery::quant
