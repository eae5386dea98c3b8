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

// The number of parameters (weights and biases) of the model `spec` describes, counted without
// allocating them; saturates at 2^62. Errors as BuildModelGraph.
absl::StatusOr<int64_t> CountParameters(const ModelSpec& spec);

}  // namespace orrery::learner
