#include "learner/layers/fused_activation.h"

namespace orrery::learner {

EltwiseAlgorithm UseDstAlgorithm(Activation activation) {
  if (activation == Activation::kRelu6) {
    return {dnnl::algorithm::eltwise_clip_v2_use_dst_for_bwd, 0.0f, 6.0f};
  }
  return {dnnl::algorithm::eltwise_relu_use_dst_for_bwd, 0.0f, 0.0f};
}

dnnl::primitive_attr ActivationAttr(Activation activation) {
  dnnl::primitive_attr attr;
  if (activation == Activation::kNone) return attr;
  dnnl::post_ops ops;
  if (activation == Activation::kRelu) {
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  } else {
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip_v2, 0.0f, 6.0f);
  }
  attr.set_post_ops(ops);
  return attr;
}

void AddActivationBackward(Activation activation, const dnnl::engine& engine,
                           const dnnl::memory& dst, const dnnl::memory& diff_dst,
                           PrimitiveStep* step) {
  if (activation == Activation::kNone) return;
  const EltwiseAlgorithm alg = UseDstAlgorithm(activation);
  const dnnl::memory::desc md = dst.get_desc();
  dnnl::eltwise_forward::primitive_desc hint(
      dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, alg.algorithm, md, alg.alpha,
                                  alg.beta),
      engine);
  dnnl::eltwise_backward::primitive_desc pd(
      dnnl::eltwise_backward::desc(alg.algorithm, md, md, alg.alpha, alg.beta), engine, hint);
  step->AddBackward(dnnl::eltwise_backward(pd), {{DNNL_ARG_DST, dst},
                                                 {DNNL_ARG_DIFF_DST, diff_dst},
                                                 {DNNL_ARG_DIFF_SRC, diff_dst}});
}

}  // namespace orrery::learner
