#include "learner/sgd.h"

#include <glog/logging.h>

namespace orrery::learner {

void SgdMomentum::Apply(std::span<float> weights, std::span<const float> grads) {
  CHECK_EQ(weights.size(), velocity_.size());
  CHECK_EQ(grads.size(), velocity_.size());
  float* v = velocity_.data();
  float* w = weights.data();
  const float* g = grads.data();
  const float lr = lr_, m = momentum_;
  const size_t n = velocity_.size();
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
  for (size_t i = 0; i < n; ++i) {
    v[i] = m * v[i] + g[i];
    w[i] -= lr * v[i];
  }
}

}  // namespace orrery::learner
