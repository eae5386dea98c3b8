// The 16-bit fixed-point format <IL, FL> (IL + FL = 16) and the scalar rounding rules every other
// part of quant/ (vector conversions, GEMM, wire encoding) must agree with bit for bit.
//
// A fixed-point value is an int16 q meaning q * 2^-FL. epsilon = 2^-FL; the range is
// [-2^(IL-1), 2^(IL-1) - epsilon]. FL may range over [0, kMaxFractionalBits]; FL > 16 (IL < 0)
// is allowed so small tensors such as gradients keep their precision.
//
// Conversion rules (identical on every code path):
//   NaN -> 0; +Inf -> the largest value; -Inf -> the smallest value; finite values outside the
//   range saturate to the nearest end.
//   Nearest: round half to even on the grid.
//   Stochastic: with s = x * 2^FL, f = floor(s), round to f + 1 with probability (s - f), else f,
//   using a 32-bit uniform draw u: up iff (u >> 8) * 2^-24 < s - f. This is exactly unbiased
//   whenever s - f is a multiple of 2^-24 (always true for |s| >= 1); below that the bias is
//   under 2^-24 epsilon.
#ifndef ORRERY_QUANT_FIXED_FORMAT_H_
#define ORRERY_QUANT_FIXED_FORMAT_H_

#include <cmath>
#include <cstdint>

#include "absl/status/statusor.h"

namespace orrery::quant {

inline constexpr int kWordBits = 16;
inline constexpr int kMaxFractionalBits = 30;
inline constexpr int32_t kFixedMin = -32768;
inline constexpr int32_t kFixedMax = 32767;

enum class Rounding { kNearest, kStochastic };

// A format <IL, FL>. Plain value type; construct through FixedFormat::Create or
// FixedFormat::WithFractionalBits (which requires 0 <= fl <= kMaxFractionalBits).
struct FixedFormat {
  int fl = 14;

  // Validates the pair; IL + FL must equal 16.
  static absl::StatusOr<FixedFormat> Create(int il, int fl);
  static constexpr FixedFormat WithFractionalBits(int fl) { return FixedFormat{fl}; }

  constexpr int il() const { return kWordBits - fl; }
  double epsilon() const { return std::ldexp(1.0, -fl); }
  double min_value() const { return std::ldexp(static_cast<double>(kFixedMin), -fl); }
  double max_value() const { return std::ldexp(static_cast<double>(kFixedMax), -fl); }
  // 2^FL and 2^-FL as floats (exact for the allowed FL).
  float scale() const { return std::ldexp(1.0f, fl); }
  float inverse_scale() const { return std::ldexp(1.0f, -fl); }

  friend bool operator==(FixedFormat a, FixedFormat b) { return a.fl == b.fl; }
};

// Largest FL in [0, kMaxFractionalBits] such that max_abs * 2^FL <= 32767, i.e. a tensor whose
// largest magnitude is max_abs fits without saturating. max_abs == 0 or NaN gives
// kMaxFractionalBits; max_abs too large for FL = 0 (including Inf) gives 0.
int ChooseFractionalBits(float max_abs);

// Scalar conversions; the reference for every vector path.
int16_t RoundNearest(float x, FixedFormat format);
// `random` is a uniform 32-bit draw (see counter_rng.h for the stream that supplies it).
int16_t RoundStochastic(float x, FixedFormat format, uint32_t random);
inline float ToFloat(int16_t q, FixedFormat format) {
  return static_cast<float>(q) * format.inverse_scale();
}

}  // namespace orrery::quant

#endif  // ORRERY_QUANT_FIXED_FORMAT_H_
