#include "server/lr_rule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace orrery::server {
namespace {

class ConstantRule final : public LearningRateRule {
 public:
  explicit ConstantRule(float base) : base_(base) {}
  float Rate(uint64_t) const override { return base_; }
  std::string name() const override { return "none"; }

 private:
  float base_;
};

class InverseStalenessRule final : public LearningRateRule {
 public:
  explicit InverseStalenessRule(float base) : base_(base) {}
  float Rate(uint64_t staleness) const override {
    return base_ / static_cast<float>(std::max<uint64_t>(1, staleness));
  }
  std::string name() const override { return "inverse"; }

 private:
  float base_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LearningRateRule>> MakeLearningRateRule(absl::string_view name,
                                                                       float base) {
  if (!std::isfinite(base) || base <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning rate base must be a positive number, got ", base));
  }
  if (name == "none") return std::make_unique<ConstantRule>(base);
  if (name == "inverse") return std::make_unique<InverseStalenessRule>(base);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown staleness rule '", name, "'; use 'none' or 'inverse'"));
}

}  // namespace orrery::server
