#include "learner/layers/softmax_cross_entropy.h"

#include <cmath>

namespace orrery::learner {

LossSum SoftmaxCrossEntropy(std::span<const float> logits, std::span<const int32_t> labels,
                            int classes, std::span<float> diff_logits) {
  LossSum result;
  const size_t n = labels.size();
  const double inv_n = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
  for (size_t i = 0; i < n; ++i) {
    const float* row = logits.data() + i * classes;
    int best = 0;
    for (int k = 1; k < classes; ++k) {
      if (row[k] > row[best]) best = k;
    }
    const double max = row[best];
    double denom = 0;
    for (int k = 0; k < classes; ++k) denom += std::exp(row[k] - max);
    const double log_denom = std::log(denom);
    const int label = labels[i];
    result.loss_sum += log_denom - (row[label] - max);
    if (best == label) ++result.correct;
    if (!diff_logits.empty()) {
      float* d = diff_logits.data() + i * classes;
      for (int k = 0; k < classes; ++k) {
        const double p = std::exp(row[k] - max - log_denom);
        d[k] = static_cast<float>((p - (k == label ? 1.0 : 0.0)) * inv_n);
      }
    }
  }
  return result;
}

}  // namespace orrery::learner
