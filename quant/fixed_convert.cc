#include "quant/fixed_convert.h"

#include <algorithm>
#include <cmath>

namespace orrery::quant {
namespace {

absl::Status CheckSizes(size_t in, size_t out) {
  if (in != out) {
    return absl::InvalidArgumentError("fixed16 conversion: input and output lengths differ");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Quantize(std::span<const float> in, FixedFormat format, Rounding rounding,
                      RandomStream stream, std::span<int16_t> out, Isa isa) {
  if (absl::Status s = CheckSizes(in.size(), out.size()); !s.ok()) return s;
  const Isa resolved = ResolveIsa(isa);
  const bool avx2 = resolved != Isa::kPortable;
  const int64_t n = static_cast<int64_t>(in.size());
  if (rounding == Rounding::kNearest) {
    if (avx2) {
      internal::QuantizeNearestAvx2(in.data(), n, format, out.data());
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = RoundNearest(in[i], format);
    }
    return absl::OkStatus();
  }
  // Stochastic: walk the counter range in pieces that stay inside one 2^32 block.
  int64_t i = 0;
  while (i < n) {
    const uint64_t counter = stream.offset + static_cast<uint64_t>(i);
    const uint64_t to_block_end = (uint64_t{1} << 32) - (counter & 0xFFFFFFFFu);
    const int64_t len =
        static_cast<int64_t>(std::min<uint64_t>(to_block_end, static_cast<uint64_t>(n - i)));
    if (avx2) {
      const auto kernel = resolved == Isa::kAvx512 ? internal::QuantizeStochasticAvx512
                                                   : internal::QuantizeStochasticAvx2;
      kernel(in.data() + i, len, format, BlockKey(stream.key, static_cast<uint32_t>(counter >> 32)),
             static_cast<uint32_t>(counter), out.data() + i);
    } else {
      for (int64_t j = 0; j < len; ++j) {
        out[i + j] = RoundStochastic(in[i + j], format,
                                     CounterRandom(stream.key, counter + static_cast<uint64_t>(j)));
      }
    }
    i += len;
  }
  return absl::OkStatus();
}

absl::Status Dequantize(std::span<const int16_t> in, FixedFormat format, std::span<float> out,
                        Isa isa) {
  if (absl::Status s = CheckSizes(in.size(), out.size()); !s.ok()) return s;
  if (ResolveIsa(isa) != Isa::kPortable) {
    internal::DequantizeAvx2(in.data(), static_cast<int64_t>(in.size()), format, out.data());
  } else {
    for (size_t i = 0; i < in.size(); ++i) out[i] = ToFloat(in[i], format);
  }
  return absl::OkStatus();
}

float MaxAbs(std::span<const float> in) {
  float m = 0.0f;
  for (float x : in) {
    const float a = std::fabs(x);
    m = a > m ? a : m;  // NaN compares false and is skipped
  }
  return m;
}

}  // namespace orrery::quant
