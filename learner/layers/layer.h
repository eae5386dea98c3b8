// The building block of a Model: one node of the network's DAG. A Layer knows its input and
// output shapes and its parameters; for each batch size it builds a LayerStep, the oneDNN
// primitives bound to that batch's memory, which then run every training or inference step.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/model_spec.h"
#include "learner/param_set.h"
#include "learner/precision.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace orrery::learner {

// Per-sample shape of an activation: {c, h, w} (NCHW with the batch) or, when `flat`, {c} (NC).
struct Shape {
  int64_t c = 0;
  int64_t h = 1;
  int64_t w = 1;
  bool flat = false;

  int64_t size() const { return c * h * w; }
  dnnl::memory::dims Dims(int64_t batch) const;
  std::string ToString() const;  // "32x14x14" or "800"
  bool operator==(const Shape& o) const {
    return c == o.c && h == o.h && w == o.w && flat == o.flat;
  }
};

// The plain f32 layout every activation uses between layers: nchw, or nc when flat.
dnnl::memory::desc ActivationDesc(const Shape& shape, int64_t batch);

// The memory one layer's step reads and writes at one batch size. Every memory has the
// ActivationDesc layout of its shape. Owned by the model's per-batch plan.
struct LayerBindings {
  int64_t batch = 0;
  std::vector<dnnl::memory> src;       // forward inputs, one per input
  std::vector<dnnl::memory> diff_src;  // where Backward writes d loss/d src; an empty memory
                                       // (no handle) means that gradient is not needed
  dnnl::memory dst;                    // forward output
  dnnl::memory diff_dst;               // d loss/d dst; Backward may overwrite it
  int index = 0;                       // the layer's position in the model
  const FixedCompute* fixed = nullptr; // set in fixed16 compute mode (dense layers use it);
                                       // borrowed from the model
};

// A layer's parameters and their gradients: two ParamSets with identical tensor layouts.
struct ParamBuffers {
  ParamSet* params = nullptr;
  ParamSet* grads = nullptr;
};

// One layer's primitives at one batch size, built once and executed every step. Forward and
// Backward submit primitives to `stream` and may throw dnnl::error; the caller waits on the
// stream and turns exceptions into Status.
class LayerStep {
 public:
  virtual ~LayerStep() = default;
  virtual void Forward(dnnl::stream& stream) = 0;
  // Overwrites diff_src (those requested) and this layer's gradients in ParamBuffers::grads.
  virtual void Backward(dnnl::stream& stream) = 0;
};

class Layer {
 public:
  // `label` names the layer in errors ("layers[3] (fc1)").
  Layer(LayerSpec spec, std::string label, Shape output)
      : spec_(std::move(spec)), label_(std::move(label)), output_(output) {}
  virtual ~Layer() = default;

  const LayerSpec& spec() const { return spec_; }
  const std::string& label() const { return label_; }
  const Shape& output_shape() const { return output_; }

  // Registers this layer's tensors ("<name>.weight", "<name>.bias") in `params` before it is
  // finalized. Called once; the model registers the same tensors in its gradient set.
  virtual void AddParams(ParamSet* /*params*/) {}
  // Writes initial values (He-uniform weights from `seed`, zero biases) into a finalized set.
  virtual void InitParams(ParamSet* /*params*/, uint64_t /*seed*/) const {}

  // True when dst is a view of src[0]'s memory (flatten): the model then need not allocate it.
  virtual bool IsView() const { return false; }

  // Builds the primitives for `bindings.batch`. `buffers` must outlive the step (it keeps raw
  // pointers into their flat buffers). Errors: oneDNN rejects a descriptor.
  virtual absl::StatusOr<std::unique_ptr<LayerStep>> Build(const dnnl::engine& engine,
                                                           const LayerBindings& bindings,
                                                           ParamBuffers buffers) const = 0;

 private:
  LayerSpec spec_;
  std::string label_;
  Shape output_;
};

// "layers[3] (fc1)": how errors name a layer.
std::string LayerLabel(int index, const std::string& name);

// Turns an exception thrown by oneDNN while building or running `layer` into a Status.
absl::Status DnnlError(const std::string& layer, const dnnl::error& e);

// Fills `weights` with He-uniform values, U(-b, b) with b = sqrt(6 / fan_in), from a stream
// determined by `seed` and `tensor_name` (so each tensor differs and runs repeat).
void FillHeUniform(std::span<float> weights, int64_t fan_in, uint64_t seed,
                   const std::string& tensor_name);

// Checks `spec` against its input shapes and builds the layer. Errors name the layer and the
// field, e.g. "layers[3] (fc1): ...". `index` is the layer's position in the model spec.
absl::StatusOr<std::unique_ptr<Layer>> CreateLayer(const LayerSpec& spec, int index,
                                                   std::span<const Shape> inputs);

}  // namespace orrery::learner
