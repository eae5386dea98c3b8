// A runnable network on oneDNN: built from a ModelSpec, it owns its parameters and gradients as
// flat ParamSets (addressable by tensor name) and runs forward/backward passes on a batch.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "learner/model_spec.h"
#include "learner/param_set.h"
#include "learner/precision.h"

namespace orrery::learner {

struct StepResult {
  double loss = 0;     // mean softmax cross-entropy over the batch
  int correct = 0;     // argmax(logits) == label
};

struct EvalResult {
  double loss_sum = 0;
  int64_t correct = 0;
  int64_t count = 0;
};

// Tensor names are "<layer name>.weight" and "<layer name>.bias". Layouts (documented so the
// server, checkpoints and the PyTorch peer agree): conv weight [groups*oc_per_group, ic/groups, kh, kw]
// (PyTorch's OIHW), dense weight [units, inputs] (PyTorch's Linear), bias [n].
//
// Not thread-safe: one thread drives a Model. oneDNN itself uses the process's OpenMP threads.
class Model {
 public:
  // Builds every layer, checks the shape chain (errors name the layer and field, e.g.
  // "layers[3] (fc1): expects 800 inputs ..."), allocates parameters initialised from `seed`
  // (He-uniform weights, zero biases) and zeroed gradients. With precision.compute fixed16 the
  // dense layers compute in 16-bit fixed point (layers/fixed_dense_step.h), drawing their
  // stochastic rounding from streams keyed by `seed` and the pass number; parameters stay float
  // (the optimizer decides whether they live on the fixed-point grid, see fixed_sgd.h).
  // Errors: bad spec, invalid precision (message names --fl / --activation-fl).
  static absl::StatusOr<std::unique_ptr<Model>> Create(const ModelSpec& spec, uint64_t seed,
                                                       const PrecisionOptions& precision = {});
  virtual ~Model() = default;

  // One training pass on n samples: images is n * C*H*W floats (NCHW), labels n ints in
  // [0, classes). Overwrites grads() with d(mean loss)/d(params). Primitives for a batch size are
  // built on first use and reused afterwards. Errors: n <= 0, label out of range, oneDNN failure.
  virtual absl::StatusOr<StepResult> TrainStep(std::span<const float> images,
                                               std::span<const int32_t> labels) = 0;

  // Forward-only (inference) pass over any number of samples, in batches of `batch`.
  virtual absl::StatusOr<EvalResult> Evaluate(std::span<const float> images,
                                              std::span<const int32_t> labels, int batch) = 0;

  virtual ParamSet& params() = 0;
  virtual ParamSet& grads() = 0;
  virtual const ModelSpec& spec() const = 0;
  virtual const PrecisionOptions& precision() const = 0;
  virtual int64_t input_size() const = 0;  // C*H*W

  // Seconds spent executing oneDNN primitives (forward + backward + reorders) since creation,
  // and seconds spent inside TrainStep/Evaluate overall; their ratio is the "in oneDNN" share.
  virtual double primitive_seconds() const = 0;
  virtual double step_seconds() const = 0;
};

}  // namespace orrery::learner
