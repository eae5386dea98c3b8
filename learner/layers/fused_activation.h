// The activation a conv or dense layer fuses into its forward primitive as a post-op, and the
// eltwise backward primitive that undoes it from the post-activation output.
#pragma once

#include "learner/layers/primitive_step.h"
#include "learner/model_spec.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace orrery::learner {

// Primitive attributes carrying `activation` as an eltwise post-op (empty for kNone).
dnnl::primitive_attr ActivationAttr(Activation activation);

// Appends to `step`'s backward list an in-place eltwise backward that turns d loss/d dst
// (post-activation) into d loss/d pre-activation, computed from dst. No-op for kNone.
// May throw dnnl::error.
void AddActivationBackward(Activation activation, const dnnl::engine& engine,
                           const dnnl::memory& dst, const dnnl::memory& diff_dst,
                           PrimitiveStep* step);

// The oneDNN algorithm (and its alpha, beta) that computes `activation` and whose backward
// needs only the output; used by the standalone relu and relu6 layers too.
struct EltwiseAlgorithm {
  dnnl::algorithm algorithm;
  float alpha = 0;
  float beta = 0;
};
EltwiseAlgorithm UseDstAlgorithm(Activation activation);

}  // namespace orrery::learner
