#include "learner/layers/eltwise_layer.h"

#include "learner/layers/fused_activation.h"
#include "learner/layers/primitive_step.h"

namespace orrery::learner {

absl::StatusOr<std::unique_ptr<Layer>> EltwiseLayer::Create(const LayerSpec& spec,
                                                            std::string label,
                                                            const Shape& input) {
  return std::unique_ptr<Layer>(new EltwiseLayer(spec, std::move(label), input));
}

absl::StatusOr<std::unique_ptr<LayerStep>> EltwiseLayer::Build(const dnnl::engine& engine,
                                                               const LayerBindings& b,
                                                               ParamBuffers /*buffers*/) const {
  try {
    const Activation activation =
        spec().kind == LayerKind::kRelu6 ? Activation::kRelu6 : Activation::kRelu;
    const EltwiseAlgorithm alg = UseDstAlgorithm(activation);
    const dnnl::memory::desc md = ActivationDesc(output_shape(), b.batch);
    const dnnl::eltwise_forward::primitive_desc fwd_pd(
        dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, alg.algorithm, md,
                                    alg.alpha, alg.beta),
        engine);
    auto step = std::make_unique<PrimitiveStep>();
    step->AddForward(dnnl::eltwise_forward(fwd_pd), {{DNNL_ARG_SRC, b.src[0]},
                                                     {DNNL_ARG_DST, b.dst}});
    if (HasMemory(b.diff_src[0])) {
      const dnnl::eltwise_backward::primitive_desc bwd_pd(
          dnnl::eltwise_backward::desc(alg.algorithm, md, md, alg.alpha, alg.beta), engine,
          fwd_pd);
      step->AddBackward(dnnl::eltwise_backward(bwd_pd), {{DNNL_ARG_DST, b.dst},
                                                         {DNNL_ARG_DIFF_DST, b.diff_dst},
                                                         {DNNL_ARG_DIFF_SRC, b.diff_src[0]}});
    }
    return std::unique_ptr<LayerStep>(std::move(step));
  } catch (const dnnl::error& e) {
    return DnnlError(label(), e);
  }
}

}  // namespace orrery::learner
