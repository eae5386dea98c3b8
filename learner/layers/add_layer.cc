#include "learner/layers/add_layer.h"

#include "absl/strings/str_format.h"
#include "learner/layers/primitive_step.h"

namespace orrery::learner {

absl::StatusOr<std::unique_ptr<Layer>> AddLayer::Create(const LayerSpec& spec, std::string label,
                                                        const Shape& a, const Shape& b) {
  if (!(a == b)) {
    const std::string first = spec.inputs.size() > 0 ? spec.inputs[0] : "?";
    const std::string second = spec.inputs.size() > 1 ? spec.inputs[1] : "?";
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.inputs: add needs two inputs of the same shape, got %s (%s) and %s (%s)", label,
        first, a.ToString(), second, b.ToString()));
  }
  return std::unique_ptr<Layer>(new AddLayer(spec, std::move(label), a));
}

absl::StatusOr<std::unique_ptr<LayerStep>> AddLayer::Build(const dnnl::engine& engine,
                                                           const LayerBindings& b,
                                                           ParamBuffers /*buffers*/) const {
  try {
    const dnnl::memory::desc md = ActivationDesc(output_shape(), b.batch);
    const dnnl::binary::primitive_desc pd(
        dnnl::binary::desc(dnnl::algorithm::binary_add, md, md, md), engine);
    auto step = std::make_unique<PrimitiveStep>();
    step->AddForward(dnnl::binary(pd), {{DNNL_ARG_SRC_0, b.src[0]},
                                        {DNNL_ARG_SRC_1, b.src[1]},
                                        {DNNL_ARG_DST, b.dst}});
    for (const dnnl::memory& diff_src : b.diff_src) {
      if (!HasMemory(diff_src) || diff_src.get_data_handle() == b.diff_dst.get_data_handle()) {
        continue;
      }
      step->AddBackward(dnnl::reorder(b.diff_dst, diff_src),
                        {{DNNL_ARG_FROM, b.diff_dst}, {DNNL_ARG_TO, diff_src}});
    }
    return std::unique_ptr<LayerStep>(std::move(step));
  } catch (const dnnl::error& e) {
    return DnnlError(label(), e);
  }
}

}  // namespace orrery::learner
