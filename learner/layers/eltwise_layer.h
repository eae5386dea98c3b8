// A standalone element-wise activation layer (relu, relu6) on oneDNN's eltwise primitives; its
// backward works from the output, so the input need not be kept.
#pragma once

#include <memory>
#include <string>

#include "learner/layers/layer.h"

namespace orrery::learner {

class EltwiseLayer final : public Layer {
 public:
  static absl::StatusOr<std::unique_ptr<Layer>> Create(const LayerSpec& spec, std::string label,
                                                       const Shape& input);

  absl::StatusOr<std::unique_ptr<LayerStep>> Build(const dnnl::engine& engine,
                                                   const LayerBindings& bindings,
                                                   ParamBuffers buffers) const override;

 private:
  using Layer::Layer;
};

}  // namespace orrery::learner
