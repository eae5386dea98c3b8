// 2-D convolution (kernel, stride, padding, groups; depthwise when groups == channels) with an
// optional bias and a fused relu/relu6, forward and backward on oneDNN.
#pragma once

#include <memory>
#include <string>

#include "learner/layers/layer.h"

namespace orrery::learner {

// Tensors: "<name>.weight" [filters, in_channels / groups, kernel, kernel] (OIHW; with groups the
// filters are grouped consecutively, as in PyTorch) and "<name>.bias" [filters] when spec.bias.
class ConvLayer final : public Layer {
 public:
  // Errors: non-4-D input, groups not dividing channels or filters, kernel larger than the
  // padded input, bad kernel/stride/padding values.
  static absl::StatusOr<std::unique_ptr<Layer>> Create(const LayerSpec& spec, std::string label,
                                                       const Shape& input);

  void AddParams(ParamSet* params) override;
  void InitParams(ParamSet* params, uint64_t seed) const override;
  absl::StatusOr<std::unique_ptr<LayerStep>> Build(const dnnl::engine& engine,
                                                   const LayerBindings& bindings,
                                                   ParamBuffers buffers) const override;

 private:
  ConvLayer(const LayerSpec& spec, std::string label, const Shape& input, const Shape& output)
      : Layer(spec, std::move(label), output), input_(input) {}

  Shape input_;
  int weight_index_ = -1;
  int bias_index_ = -1;
};

}  // namespace orrery::learner
