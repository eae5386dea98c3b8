#include "learner/layers/dense_layer.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "learner/layers/fixed_dense_step.h"
#include "learner/layers/fused_activation.h"
#include "learner/layers/primitive_step.h"

namespace orrery::learner {
namespace {

using dnnl::memory;
using Tag = dnnl::memory::format_tag;
constexpr auto kF32 = dnnl::memory::data_type::f32;

}  // namespace

absl::StatusOr<std::unique_ptr<Layer>> DenseLayer::Create(const LayerSpec& spec,
                                                          std::string label,
                                                          const Shape& input) {
  if (spec.units < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s.units: must be >= 1", label));
  }
  Shape out;
  out.c = spec.units;
  out.flat = true;
  return std::unique_ptr<Layer>(new DenseLayer(spec, std::move(label), input.size(), out));
}

void DenseLayer::AddParams(ParamSet* params) {
  const LayerSpec& s = spec();
  weight_index_ = params->Add(s.name + ".weight", {s.units, inputs_});
  if (s.bias) bias_index_ = params->Add(s.name + ".bias", {s.units});
}

void DenseLayer::InitParams(ParamSet* params, uint64_t seed) const {
  FillHeUniform(params->tensor(weight_index_), inputs_, seed, spec().name + ".weight");
  if (bias_index_ >= 0) std::ranges::fill(params->tensor(bias_index_), 0.0f);
}

absl::StatusOr<std::unique_ptr<LayerStep>> DenseLayer::Build(const dnnl::engine& engine,
                                                             const LayerBindings& b,
                                                             ParamBuffers buffers) const {
  if (b.fixed != nullptr) return BuildFixed(b, buffers);
  try {
    const LayerSpec& s = spec();
    const int64_t units = s.units;
    const memory::desc w_md({units, inputs_}, kF32, Tag::oi);
    const memory::desc bias_md({units}, kF32, Tag::x);
    const memory::desc src_md({b.batch, inputs_}, kF32, Tag::nc);
    const memory::desc dst_md({b.batch, units}, kF32, Tag::nc);
    const bool has_bias = bias_index_ >= 0;

    const memory src = View(b.src[0], src_md);
    memory weights(w_md, engine, buffers.params->tensor(weight_index_).data());
    memory diff_weights(w_md, engine, buffers.grads->tensor(weight_index_).data());
    memory bias, diff_bias;
    if (has_bias) {
      bias = memory(bias_md, engine, buffers.params->tensor(bias_index_).data());
      diff_bias = memory(bias_md, engine, buffers.grads->tensor(bias_index_).data());
    }

    const auto fwd_desc =
        has_bias ? dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_training, src_md,
                                                     w_md, bias_md, dst_md)
                 : dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_training, src_md,
                                                     w_md, dst_md);
    const dnnl::inner_product_forward::primitive_desc fwd_pd(
        fwd_desc, ActivationAttr(s.activation), engine);
    auto step = std::make_unique<PrimitiveStep>();
    PrimitiveArgs fwd_args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights},
                           {DNNL_ARG_DST, b.dst}};
    if (has_bias) fwd_args[DNNL_ARG_BIAS] = bias;
    step->AddForward(dnnl::inner_product_forward(fwd_pd), std::move(fwd_args));

    AddActivationBackward(s.activation, engine, b.dst, b.diff_dst, step.get());

    const auto bww_desc =
        has_bias ? dnnl::inner_product_backward_weights::desc(src_md, w_md, bias_md, dst_md)
                 : dnnl::inner_product_backward_weights::desc(src_md, w_md, dst_md);
    const dnnl::inner_product_backward_weights::primitive_desc bww_pd(bww_desc, engine, fwd_pd);
    PrimitiveArgs bww_args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, b.diff_dst},
                           {DNNL_ARG_DIFF_WEIGHTS, diff_weights}};
    if (has_bias) bww_args[DNNL_ARG_DIFF_BIAS] = diff_bias;
    step->AddBackward(dnnl::inner_product_backward_weights(bww_pd), std::move(bww_args));

    if (HasMemory(b.diff_src[0])) {
      const dnnl::inner_product_backward_data::primitive_desc bwd_pd(
          dnnl::inner_product_backward_data::desc(src_md, w_md, dst_md), engine, fwd_pd);
      step->AddBackward(dnnl::inner_product_backward_data(bwd_pd),
                        {{DNNL_ARG_DIFF_DST, b.diff_dst},
                         {DNNL_ARG_WEIGHTS, weights},
                         {DNNL_ARG_DIFF_SRC, View(b.diff_src[0], src_md)}});
    }
    return std::unique_ptr<LayerStep>(std::move(step));
  } catch (const dnnl::error& e) {
    return DnnlError(label(), e);
  }
}

std::unique_ptr<LayerStep> DenseLayer::BuildFixed(const LayerBindings& b,
                                                  ParamBuffers buffers) const {
  const auto floats = [](const dnnl::memory& m, int64_t n) {
    return std::span<float>(static_cast<float*>(m.get_data_handle()), static_cast<size_t>(n));
  };
  FixedDenseBuffers f;
  f.batch = b.batch;
  f.inputs = inputs_;
  f.units = spec().units;
  f.activation = spec().activation;
  f.layer_index = b.index;
  f.src = floats(b.src[0], b.batch * inputs_);
  f.dst = floats(b.dst, b.batch * f.units);
  f.diff_dst = floats(b.diff_dst, b.batch * f.units);
  if (HasMemory(b.diff_src[0])) f.diff_src = floats(b.diff_src[0], b.batch * inputs_);
  f.weights = buffers.params->tensor(weight_index_);
  f.diff_weights = buffers.grads->tensor(weight_index_);
  if (bias_index_ >= 0) {
    f.bias = buffers.params->tensor(bias_index_);
    f.diff_bias = buffers.grads->tensor(bias_index_);
  }
  return MakeFixedDenseStep(f, b.fixed);
}

}  // namespace orrery::learner
