// A shard's master weights in 16-bit fixed point <16 - FL, FL> (precision.weights: fixed16). After
// every update the float result is rounded back onto the grid with stochastic rounding, so an
// update smaller than eps = 2^-FL still moves a weight by eps with the matching probability and
// survives in expectation (Gupta et al., ICML 2015); round-to-nearest is offered as the baseline
// that loses such updates. The shard keeps a float copy equal to the grid values for its
// arithmetic and pulls; this class owns the int16 words, the truth.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "quant/counter_rng.h"
#include "quant/fixed_format.h"

namespace orrery::server {

// Not thread-safe; the owning ShardStore is locked by its ParameterShard.
class FixedMasterWeights {
 public:
  // `stream_key` separates the rounding streams of shards (use the shard index).
  FixedMasterWeights(quant::FixedFormat format, quant::Rounding rounding, uint64_t stream_key);

  quant::FixedFormat format() const { return format_; }
  quant::Rounding rounding() const { return rounding_; }

  // Rounds `weights` (finite) to the nearest grid values in place, saturating at the ends of the
  // range, and keeps them as the master words.
  void Initialize(std::span<float> weights);
  // `weights` holds the float result of an update of the master values; rounds it onto the grid
  // in place (stochastic or nearest) and stores the words. The stochastic draws depend only on
  // (stream_key, version, element), so a replayed update rounds identically.
  void Round(std::span<float> weights, uint64_t version);

  std::span<const int16_t> words() const { return words_; }
  // Elements clamped to the range's ends so far (at Initialize or Round): a sign that FL is too
  // large for these weights.
  uint64_t saturated() const { return saturated_; }

 private:
  void Store(std::span<float> weights, quant::Rounding rounding, quant::RandomStream stream);

  quant::FixedFormat format_;
  quant::Rounding rounding_;
  uint64_t stream_key_;
  std::vector<int16_t> words_;
  uint64_t saturated_ = 0;
};

}  // namespace orrery::server
