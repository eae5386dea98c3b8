// Residual add of two same-shaped inputs on oneDNN's binary primitive; backward hands the
// output gradient to both inputs.
#pragma once

#include <memory>
#include <string>

#include "learner/layers/layer.h"

namespace orrery::learner {

class AddLayer final : public Layer {
 public:
  // Errors: the two input shapes differ (the message shows both).
  static absl::StatusOr<std::unique_ptr<Layer>> Create(const LayerSpec& spec, std::string label,
                                                       const Shape& a, const Shape& b);

  absl::StatusOr<std::unique_ptr<LayerStep>> Build(const dnnl::engine& engine,
                                                   const LayerBindings& bindings,
                                                   ParamBuffers buffers) const override;

 private:
  using Layer::Layer;
};

}  // namespace orrery::learner
