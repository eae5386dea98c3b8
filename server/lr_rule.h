// Staleness-modulated learning-rate rules: how much of a gradient with staleness τ is applied.
// `none` applies α₀; `inverse` applies α₀ / max(1, τ) (Zhang, Gupta, Lian, Liu, IJCAI 2016),
// per gradient. Add a rule by implementing LearningRateRule and naming it in MakeLearningRateRule.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace orrery::server {

// Stateless and thread-compatible (const methods only).
class LearningRateRule {
 public:
  virtual ~LearningRateRule() = default;
  // The step size for one gradient whose staleness is `staleness` (τ = version when applied −
  // version it was computed on).
  virtual float Rate(uint64_t staleness) const = 0;
  virtual std::string name() const = 0;
};

// `name` is "none" or "inverse"; `base` is α₀ and must be positive and finite.
absl::StatusOr<std::unique_ptr<LearningRateRule>> MakeLearningRateRule(absl::string_view name,
                                                                       float base);

}  // namespace orrery::server
