// Inner product (a dense / fully-connected layer) with an optional bias and a fused relu/relu6,
// forward and backward on oneDNN, or in 16-bit fixed point through quant::FixedGemm when the
// bindings carry a FixedCompute (fixed_dense_step.h). A CxHxW input is read flattened, as
// PyTorch's Flatten does.
#pragma once

#include <memory>
#include <string>

#include "learner/layers/layer.h"

namespace orrery::learner {

// Tensors: "<name>.weight" [units, inputs] (PyTorch's Linear) and "<name>.bias" [units].
class DenseLayer final : public Layer {
 public:
  static absl::StatusOr<std::unique_ptr<Layer>> Create(const LayerSpec& spec, std::string label,
                                                       const Shape& input);

  void AddParams(ParamSet* params) override;
  void InitParams(ParamSet* params, uint64_t seed) const override;
  absl::StatusOr<std::unique_ptr<LayerStep>> Build(const dnnl::engine& engine,
                                                   const LayerBindings& bindings,
                                                   ParamBuffers buffers) const override;

 private:
  DenseLayer(const LayerSpec& spec, std::string label, int64_t inputs, const Shape& output)
      : Layer(spec, std::move(label), output), inputs_(inputs) {}

  // The fixed16 step (b.fixed is set).
  std::unique_ptr<LayerStep> BuildFixed(const LayerBindings& b, ParamBuffers buffers) const;

  int64_t inputs_;
  int weight_index_ = -1;
  int bias_index_ = -1;
};

}  // namespace orrery::learner
