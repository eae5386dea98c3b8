#include "learner/layers/flatten_layer.h"

#include "learner/layers/primitive_step.h"

namespace orrery::learner {

absl::StatusOr<std::unique_ptr<Layer>> FlattenLayer::Create(const LayerSpec& spec,
                                                            std::string label,
                                                            const Shape& input) {
  Shape out;
  out.c = input.size();
  out.flat = true;
  return std::unique_ptr<Layer>(new FlattenLayer(spec, std::move(label), out));
}

absl::StatusOr<std::unique_ptr<LayerStep>> FlattenLayer::Build(const dnnl::engine& engine,
                                                               const LayerBindings& b,
                                                               ParamBuffers /*buffers*/) const {
  try {
    auto step = std::make_unique<PrimitiveStep>();
    const dnnl::memory& diff_src = b.diff_src[0];
    if (HasMemory(diff_src) && diff_src.get_data_handle() != b.diff_dst.get_data_handle()) {
      const dnnl::memory diff_dst = View(b.diff_dst, diff_src.get_desc());
      step->AddBackward(dnnl::reorder(diff_dst, diff_src),
                        {{DNNL_ARG_FROM, diff_dst}, {DNNL_ARG_TO, diff_src}});
    }
    (void)engine;
    return std::unique_ptr<LayerStep>(std::move(step));
  } catch (const dnnl::error& e) {
    return DnnlError(label(), e);
  }
}

}  // namespace orrery::learner
