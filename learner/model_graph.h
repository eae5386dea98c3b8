// The checked structure of a model: its layers in order, with each layer's inputs resolved to
// nodes of the DAG (node 0 is the model input, node i + 1 is layers[i]) and every shape known.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/layers/layer.h"
#include "learner/model_spec.h"

namespace orrery::learner {

struct ModelGraph {
  Shape input;
  std::vector<std::unique_ptr<Layer>> layers;
  std::vector<std::vector<int>> inputs;  // per layer, the node ids it reads

  int num_nodes() const { return static_cast<int>(layers.size()) + 1; }
  const Shape& node_shape(int node) const {
    return node == 0 ? input : layers[node - 1]->output_shape();
  }
};

// Resolves input names and checks the shape chain. Errors name the layer and field:
// "layers[3] (fc1).inputs[0]: 'fc9' is not 'input' or the name of an earlier layer",
// "layers[6] (fc2): outputs 20 values per sample but classes is 10".
absl::StatusOr<ModelGraph> BuildModelGraph(const ModelSpec& spec);

// The batch in which a model scores the test set (Model::Evaluate's callers).
inline constexpr int kEvalBatch = 256;

// What the model `spec` describes costs in memory, measured without allocating anything.
struct ModelFootprint {
  int64_t parameters = 0;         // weights and biases; saturates at 2^62
  int64_t values_per_sample = 0;  // activations: the input and every layer's output, per sample
};
// Errors as BuildModelGraph.
absl::StatusOr<ModelFootprint> MeasureModel(const ModelSpec& spec);

}  // namespace orrery::learner
