#include "learner/fixed_sgd.h"

#include <glog/logging.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "base/multiversion.h"
#include "quant/counter_rng.h"
#include "quant/fixed_convert.h"

namespace orrery::learner {
namespace {

// Separates the update streams from the layers' (which use purposes below 2^40).
constexpr uint64_t kUpdatePurpose = uint64_t{1} << 40;

// The spans were sized together at Create, so a failure is a bug here, not bad input.
void CheckOk(const absl::Status& status) { CHECK(status.ok()) << status; }

}  // namespace

FixedSgdMomentum::FixedSgdMomentum(float lr, float momentum, quant::FixedFormat format,
                                   quant::Rounding rounding, uint64_t seed, size_t size)
    : lr_(lr),
      momentum_(momentum),
      format_(format),
      rounding_(rounding),
      seed_(seed),
      master_(size),
      velocity_(size, 0.0f),
      target_(std::min(size, kChunk)) {}

absl::StatusOr<FixedSgdMomentum> FixedSgdMomentum::Create(float lr, float momentum,
                                                          quant::FixedFormat format,
                                                          quant::Rounding rounding,
                                                          uint64_t seed,
                                                          std::span<float> weights) {
  if (!(lr > 0) || !std::isfinite(lr)) {
    return absl::InvalidArgumentError(absl::StrFormat("lr must be positive, got %g", lr));
  }
  if (!(momentum >= 0 && momentum < 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("momentum must be in [0, 1), got %g", momentum));
  }
  if (format.fl < 0 || format.fl > quant::kMaxFractionalBits) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "fractional bits must be in [0, %d], got %d", quant::kMaxFractionalBits, format.fl));
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!std::isfinite(weights[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("initial weight %d is %g; fixed16 master weights must be finite", i,
                          weights[i]));
    }
  }
  FixedSgdMomentum sgd(lr, momentum, format, rounding, seed, weights.size());
  CheckOk(quant::Quantize(weights, format, quant::Rounding::kNearest, {}, sgd.master_));
  CheckOk(quant::Dequantize(sgd.master_, format, weights));
  return sgd;
}

namespace {

// v = m v + g; t = w - lr v (w equals the master value exactly).
ORRERY_MULTIVERSION void MomentumStep(size_t n, float lr, float m, const float* w, const float* g,
                                      float* v, float* t) {
  for (size_t i = 0; i < n; ++i) {
    v[i] = m * v[i] + g[i];
    t[i] = w[i] - lr * v[i];
  }
}

}  // namespace

void FixedSgdMomentum::Apply(std::span<float> weights, std::span<const float> grads) {
  CHECK_EQ(weights.size(), master_.size());
  CHECK_EQ(grads.size(), master_.size());
  const quant::RandomStream stream = quant::RandomStream::For(seed_, steps_, kUpdatePurpose);
  // In chunks that stay in cache through the three passes; element i still draws counter i.
  const size_t n = master_.size();
  for (size_t i = 0; i < n; i += kChunk) {
    const size_t len = std::min(kChunk, n - i);
    const std::span<float> target(target_.data(), len);
    MomentumStep(len, lr_, momentum_, weights.data() + i, grads.data() + i, velocity_.data() + i,
                 target.data());
    const std::span<int16_t> master(master_.data() + i, len);
    CheckOk(quant::Quantize(target, format_, rounding_, stream.Advanced(i), master));
    CheckOk(quant::Dequantize(master, format_, weights.subspan(i, len)));
  }
  ++steps_;
}

}  // namespace orrery::learner
