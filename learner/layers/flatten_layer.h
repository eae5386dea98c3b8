// Flatten: CxHxW -> C*H*W in NCHW order. Its output is a view of its input (no copy); backward
// copies only when the model could not make the gradients share memory too.
#pragma once

#include <memory>
#include <string>

#include "learner/layers/layer.h"

namespace orrery::learner {

class FlattenLayer final : public Layer {
 public:
  static absl::StatusOr<std::unique_ptr<Layer>> Create(const LayerSpec& spec, std::string label,
                                                       const Shape& input);

  bool IsView() const override { return true; }
  absl::StatusOr<std::unique_ptr<LayerStep>> Build(const dnnl::engine& engine,
                                                   const LayerBindings& bindings,
                                                   ParamBuffers buffers) const override;

 private:
  using Layer::Layer;
};

}  // namespace orrery::learner
