// SGD with momentum whose master weights live in 16-bit fixed point <16 - FL, FL> (Gupta et al.,
// ICML 2015): after every update the weights are rounded back to the grid, stochastically or to
// nearest. With round-to-nearest an update smaller than eps/2 = 2^-(FL+1) is lost outright; with
// stochastic rounding it moves the weight by eps with the matching probability, so the update
// survives in expectation. The velocity stays in float.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/fixed_format.h"

namespace orrery::learner {

// Not thread-safe; one owner.
class FixedSgdMomentum {
 public:
  // Rounds `weights` to the grid (nearest, saturating) as the initial master copy and writes the
  // rounded values back. `seed` keys the stochastic-rounding streams (one per step).
  // Errors: lr not positive and finite, momentum outside [0, 1), FL outside
  // [0, quant::kMaxFractionalBits], non-finite initial weights.
  static absl::StatusOr<FixedSgdMomentum> Create(float lr, float momentum,
                                                 quant::FixedFormat format,
                                                 quant::Rounding rounding, uint64_t seed,
                                                 std::span<float> weights);

  // v <- momentum * v + g;  master <- round(master - lr * v);  weights <- master (exactly).
  // `weights` and `grads` must be the spans of Create's size (CHECK: a caller bug).
  void Apply(std::span<float> weights, std::span<const float> grads);

  std::span<const int16_t> master() const { return master_; }
  quant::FixedFormat format() const { return format_; }
  uint64_t steps() const { return steps_; }

 private:
  FixedSgdMomentum(float lr, float momentum, quant::FixedFormat format, quant::Rounding rounding,
                   uint64_t seed, size_t size);

  float lr_;
  float momentum_;
  quant::FixedFormat format_;
  quant::Rounding rounding_;
  uint64_t seed_;
  uint64_t steps_ = 0;
  std::vector<int16_t> master_;
  std::vector<float> velocity_;
  // Apply works in chunks of this many elements (16 KiB of floats: L1-sized).
  static constexpr size_t kChunk = 4096;
  std::vector<float> target_;  // master - lr * v before rounding, one chunk
};

}  // namespace orrery::learner
