#include "learner/model_graph.h"

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "learner/param_set.h"

namespace orrery::learner {

absl::StatusOr<ModelGraph> BuildModelGraph(const ModelSpec& spec) {
  if (spec.input_channels < 1 || spec.input_height < 1 || spec.input_width < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "input: channels, height and width must be >= 1, got %dx%dx%d", spec.input_channels,
        spec.input_height, spec.input_width));
  }
  if (spec.classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("classes: must be >= 2, got %d", spec.classes));
  }
  if (spec.layers.empty()) return absl::InvalidArgumentError("layers: at least one is required");

  ModelGraph graph;
  graph.input = Shape{spec.input_channels, spec.input_height, spec.input_width, false};
  absl::flat_hash_map<std::string, int> node_of{{"input", 0}};
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const LayerSpec& layer = spec.layers[i];
    const int index = static_cast<int>(i);
    const std::string label = LayerLabel(index, layer.name);
    if (layer.name.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("layers[%d].name: empty", index));
    }
    std::vector<int> nodes;
    std::vector<Shape> shapes;
    if (layer.inputs.empty()) {
      nodes.push_back(index);  // the previous layer's node (the model input for the first)
    }
    for (size_t k = 0; k < layer.inputs.size(); ++k) {
      auto it = node_of.find(layer.inputs[k]);
      if (it == node_of.end()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s.inputs[%d]: '%s' is not 'input' or the name of an earlier layer", label, k,
            layer.inputs[k]));
      }
      nodes.push_back(it->second);
    }
    for (int node : nodes) shapes.push_back(graph.node_shape(node));
    ASSIGN_OR_RETURN(std::unique_ptr<Layer> built, CreateLayer(layer, index, shapes));
    if (!node_of.emplace(layer.name, index + 1).second) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "layers[%d].name: '%s' is already used by %s", index, layer.name,
          layer.name == "input" ? "the model input" : "an earlier layer"));
    }
    graph.layers.push_back(std::move(built));
    graph.inputs.push_back(std::move(nodes));
  }
  const Layer& last = *graph.layers.back();
  if (last.output_shape().size() != spec.classes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: outputs %d values per sample (%s) but classes is %d; the last layer's output is "
        "the logits",
        last.label(), last.output_shape().size(), last.output_shape().ToString(), spec.classes));
  }
  return graph;
}

absl::StatusOr<ModelFootprint> MeasureModel(const ModelSpec& spec) {
  ASSIGN_OR_RETURN(ModelGraph graph, BuildModelGraph(spec));
  ParamSet params;  // registered, never finalized: nothing is allocated
  for (auto& layer : graph.layers) layer->AddParams(&params);
  ModelFootprint f;
  f.parameters = params.total_size();
  for (int node = 0; node < graph.num_nodes(); ++node) f.values_per_sample += graph.node_shape(node).size();
  return f;
}

}  // namespace orrery::learner
