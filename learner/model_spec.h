// A model spec: the plain description of a network, parsed from YAML (examples/models/*.yaml)
// and turned into a runnable Model by Model::Create. No oneDNN here.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace orrery::learner {

enum class Activation { kNone, kRelu, kRelu6 };

enum class LayerKind {
  kConv,        // 2-D convolution: filters, kernel, stride, padding, groups, bias, activation
  kDense,       // inner product: units, bias, activation
  kRelu,        // element-wise max(0, x)
  kRelu6,       // element-wise min(max(0, x), 6)
  kMaxPool,     // kernel, stride, padding
  kAvgPool,     // kernel, stride, padding (padding excluded from the average)
  kGlobalAvgPool,
  kFlatten,
  kAdd,         // residual add of exactly two inputs of the same shape
};

struct LayerSpec {
  std::string name;                 // unique within the model; prefixes its tensors ("conv1.weight")
  LayerKind kind = LayerKind::kDense;
  std::vector<std::string> inputs;  // names of earlier layers or "input"; empty = the previous layer
  int filters = 0;                  // conv
  int units = 0;                    // dense
  int kernel = 0;                   // conv, pools
  int stride = 1;                   // conv, pools
  int padding = 0;                  // conv, pools
  int groups = 1;                   // conv; groups == channels is depthwise
  bool bias = true;                 // conv, dense
  Activation activation = Activation::kNone;  // conv, dense: fused as a post-op
};

// The last layer's output (flattened) is the logits; the loss is softmax cross-entropy.
struct ModelSpec {
  std::string name;
  int input_channels = 1;
  int input_height = 28;
  int input_width = 28;
  int classes = 10;
  std::vector<LayerSpec> layers;
};

// Parses a model spec from YAML text. Errors name the field ("layers[2].kernel: missing").
// Shape-chain checks happen in Model::Create, which knows the shapes.
absl::StatusOr<ModelSpec> ParseModelSpec(const std::string& yaml_text);
absl::StatusOr<ModelSpec> LoadModelSpec(const std::string& path);

const char* LayerKindName(LayerKind kind);

}  // namespace orrery::learner
