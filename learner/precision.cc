#include "learner/precision.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace orrery::learner {

absl::StatusOr<ComputeFormat> ParseComputeFormat(std::string_view text) {
  if (text == "fp32") return ComputeFormat::kFp32;
  if (text == "fixed16") return ComputeFormat::kFixed16;
  return absl::InvalidArgumentError(
      absl::StrCat("precision must be fp32 or fixed16, got '", std::string(text), "'"));
}

absl::StatusOr<quant::Rounding> ParseRounding(std::string_view text) {
  if (text == "stochastic") return quant::Rounding::kStochastic;
  if (text == "nearest") return quant::Rounding::kNearest;
  return absl::InvalidArgumentError(
      absl::StrCat("rounding must be stochastic or nearest, got '", std::string(text), "'"));
}

const char* ComputeFormatName(ComputeFormat format) {
  return format == ComputeFormat::kFixed16 ? "fixed16" : "fp32";
}

const char* RoundingName(quant::Rounding rounding) {
  return rounding == quant::Rounding::kStochastic ? "stochastic" : "nearest";
}

absl::Status ValidatePrecision(const PrecisionOptions& p) {
  if (p.compute == ComputeFormat::kFp32) return absl::OkStatus();
  const auto check = [](const char* flag, int fl) -> absl::Status {
    if (fl < 0 || fl > quant::kMaxFractionalBits) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: fractional bits must be in [0, %d] (IL = 16 - FL), got %d", flag,
                          quant::kMaxFractionalBits, fl));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = check("--fl", p.fixed.fl); !s.ok()) return s;
  return check("--activation-fl", p.fixed.activation_fl);
}

}  // namespace orrery::learner
