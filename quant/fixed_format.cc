#include "quant/fixed_format.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace orrery::quant {

absl::StatusOr<FixedFormat> FixedFormat::Create(int il, int fl) {
  if (il + fl != kWordBits) {
    return absl::InvalidArgumentError(
        absl::StrCat("fixed-point format <", il, ", ", fl, ">: IL + FL must equal 16"));
  }
  if (fl < 0 || fl > kMaxFractionalBits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fixed-point format <", il, ", ", fl, ">: FL must be in [0, ", kMaxFractionalBits, "]"));
  }
  return FixedFormat{fl};
}

int ChooseFractionalBits(float max_abs) {
  if (!(max_abs > 0.0f)) return kMaxFractionalBits;  // zero, negative or NaN
  // max_abs * 2^fl <= 32767, computed in double so it is exact.
  for (int fl = kMaxFractionalBits; fl >= 0; --fl) {
    if (std::ldexp(static_cast<double>(max_abs), fl) <= kFixedMax) return fl;
  }
  return 0;
}

namespace {

// Saturates an integral-valued float (possibly +-Inf, never NaN) to the int16 range.
inline int16_t SaturateToInt16(float v) {
  if (v < static_cast<float>(kFixedMin)) v = static_cast<float>(kFixedMin);
  if (v > static_cast<float>(kFixedMax)) v = static_cast<float>(kFixedMax);
  return static_cast<int16_t>(static_cast<int32_t>(v));
}

}  // namespace

int16_t RoundNearest(float x, FixedFormat format) {
  if (std::isnan(x)) return 0;
  const float s = x * format.scale();
  const float f = std::floor(s);
  const float d = s - f;  // NaN for +-Inf: neither comparison below holds
  float v = f;
  if (d > 0.5f) {
    v = f + 1.0f;
  } else if (d == 0.5f && std::fmod(f, 2.0f) != 0.0f) {
    v = f + 1.0f;  // ties to even
  }
  return SaturateToInt16(v);
}

int16_t RoundStochastic(float x, FixedFormat format, uint32_t random) {
  if (std::isnan(x)) return 0;
  const float s = x * format.scale();
  const float f = std::floor(s);
  const float frac = s - f;  // NaN for +-Inf: never rounds up
  const float u = static_cast<float>(random >> 8) * 0x1p-24f;
  const float v = f + (u < frac ? 1.0f : 0.0f);
  return SaturateToInt16(v);
}

}  // namespace orrery::quant
