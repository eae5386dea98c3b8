#include "learner/param_set.h"

#include <glog/logging.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace orrery::learner {

int ParamSet::Add(std::string name, std::vector<int64_t> dims) {
  CHECK(!finalized_) << "ParamSet::Add(" << name << ") after Finalize";
  CHECK(!by_name_.contains(name)) << "duplicate tensor " << name;
  // Saturates instead of overflowing, so that an absurd model is refused by its size (Model
  // checks total_size() against kMaxModelParameters before Finalize allocates).
  constexpr int64_t kHuge = int64_t{1} << 62;
  int64_t size = 1;
  for (int64_t d : dims) size = d > 0 && size > kHuge / d ? kHuge : size * d;
  const int index = static_cast<int>(infos_.size());
  by_name_.emplace(name, index);
  infos_.push_back(TensorInfo{std::move(name), std::move(dims), total_, size});
  total_ = std::min(total_ + size, kHuge);
  return index;
}

void ParamSet::Finalize() {
  CHECK(!finalized_) << "ParamSet::Finalize called twice";
  data_.assign(static_cast<size_t>(total_), 0.0f);
  finalized_ = true;
}

std::span<float> ParamSet::tensor(int index) {
  const TensorInfo& info = infos_.at(index);
  return std::span<float>(data_).subspan(info.offset, info.size);
}

std::span<const float> ParamSet::tensor(int index) const {
  const TensorInfo& info = infos_.at(index);
  return std::span<const float>(data_).subspan(info.offset, info.size);
}

absl::StatusOr<std::span<float>> ParamSet::tensor(const std::string& name) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return absl::NotFoundError(absl::StrCat("no tensor named '", name, "'"));
  if (!finalized_) return absl::FailedPreconditionError("ParamSet not finalized");
  return tensor(it->second);
}

}  // namespace orrery::learner
