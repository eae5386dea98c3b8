#include "learner/fixed_sgd.h"

#include <glog/logging.h>

#include <cmath>

#include "absl/strings/str_format.h"
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
      target_(size) {}

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

void FixedSgdMomentum::Apply(std::span<float> weights, std::span<const float> grads) {
  CHECK_EQ(weights.size(), master_.size());
  CHECK_EQ(grads.size(), master_.size());
  const size_t n = master_.size();
  const float lr = lr_, m = momentum_;
  float* v = velocity_.data();
  float* t = target_.data();
  const float* w = weights.data();
  const float* g = grads.data();
  for (size_t i = 0; i < n; ++i) {
    v[i] = m * v[i] + g[i];
    t[i] = w[i] - lr * v[i];  // w[i] equals the master value exactly
  }
  const quant::RandomStream stream = quant::RandomStream::For(seed_, steps_, kUpdatePurpose);
  CheckOk(quant::Quantize(target_, format_, rounding_, stream, master_));
  CheckOk(quant::Dequantize(master_, format_, weights));
  ++steps_;
}

}  // namespace orrery::learner
