// A dense layer's training step in 16-bit fixed point (precision.compute: fixed16): the forward
// GEMM and both backward GEMMs run through quant::FixedGemm on int16 operands, accumulate exactly
// and round each output once, stochastically or to nearest (Gupta et al., ICML 2015).
//
//   forward   x -> <A>, W -> <W>;  y = round_<A>(x W^T + b);  dst = act(y)  (act is exact on the
//             grid: relu, relu6)
//   backward  e = act'(dst) * diff_dst -> <W>;  dW = round_<W>(e^T x);  db = round_<W>(sum e);
//             diff_src = round_<W>(e W)
// where <A> = <16 - activation_fl, activation_fl> and <W> = <16 - fl, fl> (FixedComputeOptions).
// Values already on a grid convert exactly, so only the first conversion of a float and each
// GEMM output actually round. Stochastic draws come from quant::RandomStream::For(seed, pass,
// purpose) with a purpose per layer and per rounded quantity, so runs are reproducible.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "learner/layers/layer.h"
#include "learner/model_spec.h"
#include "learner/precision.h"

namespace orrery::learner {

struct FixedDenseBuffers {
  int64_t batch = 0;
  int64_t inputs = 0;
  int64_t units = 0;
  Activation activation = Activation::kNone;
  int layer_index = 0;                 // separates this layer's random streams from the others'
  std::span<const float> src;          // [batch, inputs]
  std::span<float> dst;                // [batch, units]
  std::span<float> diff_dst;           // [batch, units]; overwritten by Backward
  std::span<float> diff_src;           // [batch, inputs]; empty when not needed
  std::span<const float> weights;      // [units, inputs]
  std::span<const float> bias;         // [units]; empty without bias
  std::span<float> diff_weights;       // [units, inputs]
  std::span<float> diff_bias;          // [units]; empty without bias
};

// Every span and `fixed` are borrowed and must outlive the step. Not thread-safe. Forward and
// Backward wait on the stream first (earlier layers may still be running on it).
std::unique_ptr<LayerStep> MakeFixedDenseStep(const FixedDenseBuffers& buffers,
                                              const FixedCompute* fixed);

}  // namespace orrery::learner
