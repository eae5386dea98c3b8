// Pooling layers on oneDNN: max pooling (backward through the forward's workspace), average
// pooling that excludes padding from the count, and global average pooling (CxHxW -> Cx1x1).
#pragma once

#include <memory>
#include <string>

#include "learner/layers/layer.h"

namespace orrery::learner {

class PoolLayer final : public Layer {
 public:
  // Errors: flat input, bad kernel/stride/padding, kernel larger than the padded input.
  static absl::StatusOr<std::unique_ptr<Layer>> Create(const LayerSpec& spec, std::string label,
                                                       const Shape& input);

  absl::StatusOr<std::unique_ptr<LayerStep>> Build(const dnnl::engine& engine,
                                                   const LayerBindings& bindings,
                                                   ParamBuffers buffers) const override;

 private:
  PoolLayer(const LayerSpec& spec, std::string label, const Shape& input, const Shape& output)
      : Layer(spec, std::move(label), output), input_(input) {}

  Shape input_;
};

}  // namespace orrery::learner
