// A model's memory and oneDNN primitives at one batch size: every activation and gradient
// buffer, each layer's step, and the sums that gather gradients of nodes read by several layers.
// Built once per batch size and reused for every step at that size.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/layers/layer.h"
#include "learner/model_graph.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace orrery::learner {

// Not thread-safe. Borrows `graph`, the ParamSets in `buffers` and `fixed`; they must outlive
// the plan. A non-null `fixed` builds the dense layers' fixed16 steps.
class BatchPlan {
 public:
  static absl::StatusOr<std::unique_ptr<BatchPlan>> Create(const ModelGraph& graph,
                                                           const dnnl::engine& engine,
                                                           ParamBuffers buffers, int64_t batch,
                                                           const FixedCompute* fixed = nullptr);

  int64_t batch() const { return batch_; }
  // The model input, batch * C*H*W floats (NCHW); the caller fills it before Forward.
  std::span<float> input();
  // The last layer's output, [batch, classes]; valid after Forward.
  std::span<const float> logits();
  // Where the caller writes d loss/d logits before Backward.
  std::span<float> diff_logits();

  // Submit the primitives to `stream` and return without waiting; may throw dnnl::error.
  void Forward(dnnl::stream& stream);
  void Backward(dnnl::stream& stream);

 private:
  BatchPlan() = default;

  int64_t batch_ = 0;
  int64_t input_size_ = 0;
  int64_t logits_size_ = 0;
  std::vector<dnnl::memory> out_;   // per node
  std::vector<dnnl::memory> diff_;  // per node; empty for the model input
  std::vector<std::unique_ptr<LayerStep>> steps_;  // per layer
  // Per node with several readers: a sum of the readers' separate gradient buffers into diff_.
  struct GradientSum {
    dnnl::primitive sum;
    std::unordered_map<int, dnnl::memory> args;
  };
  std::vector<std::unique_ptr<GradientSum>> sums_;  // per node, null when not needed
};

}  // namespace orrery::learner
