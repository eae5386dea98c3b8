// The number format of a learner's arithmetic: fp32, or 16-bit fixed point <IL, FL> with
// stochastic or round-to-nearest rounding (Gupta et al., ICML 2015). In fixed16 mode the dense
// (inner-product) layers run their forward and backward GEMMs through quant::FixedGemm; the other
// layers stay in float. Plain values, parsed from flags and job specs.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quant/fixed_format.h"

namespace orrery::learner {

enum class ComputeFormat { kFp32, kFixed16 };

struct FixedComputeOptions {
  // FL of the weights and biases (the GEMM operands and the master copy), of their gradients and
  // of the back-propagated errors: format <16 - fl, fl>. The experiment variable.
  int fl = 12;
  // FL of a dense layer's inputs and rounded outputs (the activations): <16 - activation_fl,
  // activation_fl>. The default <6, 10> holds activations and logits up to +-32 at eps ~ 0.001.
  int activation_fl = 10;
  // Rounding of every conversion and GEMM output (and of the weight updates unless
  // update_rounding says otherwise).
  quant::Rounding rounding = quant::Rounding::kStochastic;
  // Rounding of the master-weight updates (FixedSgdMomentum); unset: `rounding`. Separating the
  // two shows which rounding causes a failure.
  std::optional<quant::Rounding> update_rounding;
  // Mixed into the key of the stochastic-rounding streams; 0 keeps the key the model's seed.
  // Processes that share the weight seed (a distributed job's learners) set distinct salts so
  // that they do not draw the same rounding noise.
  uint64_t stream_salt = 0;

  quant::Rounding weight_update_rounding() const { return update_rounding.value_or(rounding); }
};

struct PrecisionOptions {
  ComputeFormat compute = ComputeFormat::kFp32;
  FixedComputeOptions fixed;  // read only when compute is kFixed16
};

// "fp32" | "fixed16".
absl::StatusOr<ComputeFormat> ParseComputeFormat(std::string_view text);
// "stochastic" | "nearest".
absl::StatusOr<quant::Rounding> ParseRounding(std::string_view text);
const char* ComputeFormatName(ComputeFormat format);
const char* RoundingName(quant::Rounding rounding);

// Checks the FLs (each in [0, quant::kMaxFractionalBits]); errors name the flag (--fl,
// --activation-fl). Always OK for fp32.
absl::Status ValidatePrecision(const PrecisionOptions& precision);

// What a fixed16 layer needs at run time. Owned by the model; layers borrow it.
struct FixedCompute {
  FixedComputeOptions options;
  uint64_t seed = 0;            // key of the stochastic-rounding streams
  const uint64_t* pass = nullptr;  // the model's pass counter: each pass draws fresh streams
  int threads = 1;              // OpenMP threads for the fixed GEMMs

  quant::FixedFormat weight_format() const { return quant::FixedFormat{options.fl}; }
  quant::FixedFormat activation_format() const {
    return quant::FixedFormat{options.activation_fl};
  }
};

}  // namespace orrery::learner
