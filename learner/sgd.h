// Plain SGD with (heavy-ball) momentum over a model's flat parameter buffer.
#pragma once

#include <span>
#include <vector>

namespace orrery::learner {

// v <- momentum * v + g;  w <- w - lr * v.  Not thread-safe; one owner.
class SgdMomentum {
 public:
  SgdMomentum(float lr, float momentum, size_t size) : lr_(lr), momentum_(momentum), velocity_(size, 0.f) {}
  void Apply(std::span<float> weights, std::span<const float> grads);
  void set_lr(float lr) { lr_ = lr; }
  float lr() const { return lr_; }

 private:
  float lr_;
  float momentum_;
  std::vector<float> velocity_;
};

}  // namespace orrery::learner
