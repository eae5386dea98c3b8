// Softmax cross-entropy, the training loss: plain C++ over the [batch, classes] logits (a few
// hundred values per step, so not worth a primitive), accumulated in double.
#pragma once

#include <cstdint>
#include <span>

namespace orrery::learner {

struct LossSum {
  double loss_sum = 0;  // sum over the batch of -log softmax(logits)[label]
  int correct = 0;      // samples whose argmax(logits) == label (first maximum wins)
};

// `logits` is [labels.size(), classes] row-major; labels must be in [0, classes) (the caller
// checks). When `diff_logits` is non-empty it receives d(mean loss)/d logits, i.e.
// (softmax - onehot) / batch, in the logits' layout.
LossSum SoftmaxCrossEntropy(std::span<const float> logits, std::span<const int32_t> labels,
                            int classes, std::span<float> diff_logits);

}  // namespace orrery::learner
