#include "quant/fixed_gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "quant/gemm_kernels.h"

namespace orrery::quant {
namespace {

// Output tile handled by one task; multiples of every kernel's MR and NR.
constexpr int64_t kTileRows = 96;
constexpr int64_t kTileCols = 256;
// K elements per block at most (cache), and the granule the overflow bound is computed on.
constexpr int64_t kMaxBlockElems = 512;
constexpr int64_t kGranule = 16;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
using AlignedArray = std::unique_ptr<T[], FreeDeleter>;

template <typename T>
AlignedArray<T> AllocateAligned(int64_t count) {
  size_t bytes = static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T);
  bytes = (bytes + 63) / 64 * 64;
  return AlignedArray<T>(static_cast<T*>(std::aligned_alloc(64, bytes)));
}

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
    return absl::InvalidArgumentError(absl::StrCat("fixed GEMM: A is ", a.rows, "x", a.cols,
                                                   " but B is ", b.rows, "x", b.cols));
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

// Packs A into panels of mr rows: [panel][pair][mr] int32 words of two int16 (even k low).
void PackA(const FixedMatrixView& a, int mr, int64_t pairs, int32_t* out) {
  const int64_t panels = (a.rows + mr - 1) / mr;
  for (int64_t panel = 0; panel < panels; ++panel) {
    int32_t* dst = out + panel * pairs * mr;
    for (int r = 0; r < mr; ++r) {
      const int64_t i = panel * mr + r;
      for (int64_t p = 0; p < pairs; ++p) {
        uint16_t lo = 0, hi = 0;
        if (i < a.rows) {
          lo = static_cast<uint16_t>(a.At(i, 2 * p));
          if (2 * p + 1 < a.cols) hi = static_cast<uint16_t>(a.At(i, 2 * p + 1));
        }
        dst[p * mr + r] = static_cast<int32_t>(static_cast<uint32_t>(lo) |
                                               (static_cast<uint32_t>(hi) << 16));
      }
    }
  }
}

// Packs B into panels of nr columns: [panel][pair][nr][2] int16.
void PackB(const FixedMatrixView& b, int nr, int64_t pairs, int16_t* out) {
  const int64_t panels = (b.cols + nr - 1) / nr;
  for (int64_t panel = 0; panel < panels; ++panel) {
    int16_t* dst = out + panel * pairs * nr * 2;
    for (int64_t p = 0; p < pairs; ++p) {
      const int64_t k0 = 2 * p, k1 = 2 * p + 1;
      for (int c = 0; c < nr; ++c) {
        const int64_t j = panel * nr + c;
        const bool in = j < b.cols;
        dst[(p * nr + c) * 2] = in ? b.At(k0, j) : 0;
        dst[(p * nr + c) * 2 + 1] = (in && k1 < b.rows) ? b.At(k1, j) : 0;
      }
    }
  }
}

using Kernel = void (*)(const int32_t*, const int16_t*, int64_t, int64_t*, int64_t, bool);

// Computes exact int64 tiles of a * b and hands each to sink(row0, col0, rows, cols, acc, ldacc).
// Returns false (having done nothing) when the int32 blocking cannot be proven safe.
template <typename Sink>
bool RunBlocked(const FixedMatrixView& a, const FixedMatrixView& b, Isa isa, int threads,
                const Sink& sink) {
  const int mr = isa == Isa::kAvx512 ? internal::kAvx512Mr : internal::kAvx2Mr;
  const int nr = isa == Isa::kAvx512 ? internal::kAvx512Nr : internal::kAvx2Nr;
  const Kernel kernel =
      isa == Isa::kAvx512 ? internal::GemmKernelAvx512 : internal::GemmKernelAvx2;
  const int64_t m = a.rows, n = b.cols, k = a.cols;
  const std::vector<int64_t> block_ends = internal::PlanKBlocks(a, b);
  if (block_ends.empty()) return false;
  const int64_t pairs = (k + 1) / 2;
  const int64_t a_panels = (m + mr - 1) / mr, b_panels = (n + nr - 1) / nr;
  AlignedArray<int32_t> a_packed = AllocateAligned<int32_t>(a_panels * pairs * mr);
  AlignedArray<int16_t> b_packed = AllocateAligned<int16_t>(b_panels * pairs * nr * 2);
  PackA(a, mr, pairs, a_packed.get());
  PackB(b, nr, pairs, b_packed.get());

  const int64_t tiles_m = (m + kTileRows - 1) / kTileRows;
  const int64_t tiles_n = (n + kTileCols - 1) / kTileCols;
  const int64_t tiles = tiles_m * tiles_n;
#pragma omp parallel num_threads(threads) if (threads > 1 && tiles > 1)
  {
    AlignedArray<int64_t> acc = AllocateAligned<int64_t>(kTileRows * kTileCols);
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t row0 = (t / tiles_n) * kTileRows, col0 = (t % tiles_n) * kTileCols;
      const int64_t rows = std::min(kTileRows, m - row0), cols = std::min(kTileCols, n - col0);
      const int64_t row_panels = (rows + mr - 1) / mr, col_panels = (cols + nr - 1) / nr;
      int64_t p0 = 0;
      for (size_t blk = 0; blk < block_ends.size(); ++blk) {
        const int64_t p1 = block_ends[blk];
        for (int64_t jp = 0; jp < col_panels; ++jp) {
          const int16_t* bp = b_packed.get() + ((col0 / nr + jp) * pairs + p0) * nr * 2;
          for (int64_t ip = 0; ip < row_panels; ++ip) {
            const int32_t* ap = a_packed.get() + ((row0 / mr + ip) * pairs + p0) * mr;
            kernel(ap, bp, p1 - p0, acc.get() + ip * mr * kTileCols + jp * nr, kTileCols,
                   blk == 0);
          }
        }
        p0 = p1;
      }
      sink(row0, col0, rows, cols, acc.get(), kTileCols);
    }
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
  if (isa != Isa::kPortable && a.cols > 0 &&
      RunBlocked(a, b, isa, std::max(1, options.threads), sink)) {
    return;
  }
  RunPortable(a, b, sink);
}

}  // namespace

namespace internal {

std::vector<int64_t> PlanKBlocks(const FixedMatrixView& a, const FixedMatrixView& b) {
  const int64_t m = a.rows, n = b.cols, k = a.cols;
  const int64_t granules = (k + kGranule - 1) / kGranule;
  if (granules == 0) return {};
  std::vector<int64_t> a_sq(static_cast<size_t>(granules * m), 0);  // [granule][row]
  std::vector<int64_t> b_sq(static_cast<size_t>(granules * n), 0);  // [granule][col]
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t kk = 0; kk < k; ++kk) {
      const int64_t v = a.At(i, kk);
      a_sq[(kk / kGranule) * m + i] += v * v;
    }
  }
  for (int64_t kk = 0; kk < k; ++kk) {
    int64_t* row = &b_sq[(kk / kGranule) * n];
    for (int64_t j = 0; j < n; ++j) {
      const int64_t v = b.At(kk, j);
      row[j] += v * v;
    }
  }
  __extension__ using Wide = unsigned __int128;
  const Wide limit = static_cast<Wide>(0x7FFFFFFF) * 0x7FFFFFFF;
  std::vector<int64_t> a_run(static_cast<size_t>(m)), b_run(static_cast<size_t>(n));
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
  auto sink = [&](int64_t row0, int64_t col0, int64_t rows, int64_t cols, const int64_t* acc,
                  int64_t ldacc) {
    for (int64_t r = 0; r < rows; ++r) {
      int16_t* out = c + (row0 + r) * ldc + col0;
      const int64_t* in = acc + r * ldacc;
      const uint64_t counter0 = stream.offset + static_cast<uint64_t>((row0 + r) * n + col0);
      for (int64_t j = 0; j < cols; ++j) {
        const uint32_t random = rounding == Rounding::kStochastic
                                    ? CounterRandom(stream.key, counter0 + static_cast<uint64_t>(j))
                                    : 0;
        out[j] = RoundAccumulator(in[j], shift, rounding, random);
      }
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
