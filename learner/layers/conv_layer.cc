#include "learner/layers/conv_layer.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "learner/layers/fused_activation.h"
#include "learner/layers/primitive_step.h"

namespace orrery::learner {
namespace {

using dnnl::memory;
using Tag = dnnl::memory::format_tag;
constexpr auto kF32 = dnnl::memory::data_type::f32;

// Right padding that makes oneDNN's size check hold for floor-mode output sizes.
int64_t PadRight(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad_l) {
  return std::max<int64_t>(0, (out - 1) * stride + kernel - in - pad_l);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Layer>> ConvLayer::Create(const LayerSpec& spec, std::string label,
                                                         const Shape& input) {
  if (input.flat) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.inputs: conv needs a CxHxW input, got a flat vector of %d", label, input.c));
  }
  if (spec.filters < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s.filters: must be >= 1", label));
  }
  if (spec.kernel < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s.kernel: must be >= 1", label));
  }
  if (spec.stride < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s.stride: must be >= 1", label));
  }
  if (spec.padding < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s.padding: must be >= 0", label));
  }
  if (spec.groups < 1 || input.c % spec.groups != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s.groups: %d does not divide the input's %d channels", label,
                        spec.groups, input.c));
  }
  if (spec.filters % spec.groups != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.groups: %d does not divide filters (%d)", label, spec.groups, spec.filters));
  }
  const int64_t ph = input.h + 2 * spec.padding, pw = input.w + 2 * spec.padding;
  if (spec.kernel > ph || spec.kernel > pw) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.kernel: %d is larger than the padded input (%dx%d with padding %d)", label,
        spec.kernel, input.h, input.w, spec.padding));
  }
  Shape out;
  out.c = spec.filters;
  out.h = (ph - spec.kernel) / spec.stride + 1;
  out.w = (pw - spec.kernel) / spec.stride + 1;
  return std::unique_ptr<Layer>(new ConvLayer(spec, std::move(label), input, out));
}

void ConvLayer::AddParams(ParamSet* params) {
  const LayerSpec& s = spec();
  weight_index_ = params->Add(s.name + ".weight",
                              {s.filters, input_.c / s.groups, s.kernel, s.kernel});
  if (s.bias) bias_index_ = params->Add(s.name + ".bias", {s.filters});
}

void ConvLayer::InitParams(ParamSet* params, uint64_t seed) const {
  const LayerSpec& s = spec();
  const int64_t fan_in = input_.c / s.groups * s.kernel * s.kernel;
  FillHeUniform(params->tensor(weight_index_), fan_in, seed, s.name + ".weight");
  if (bias_index_ >= 0) std::ranges::fill(params->tensor(bias_index_), 0.0f);
}

absl::StatusOr<std::unique_ptr<LayerStep>> ConvLayer::Build(const dnnl::engine& engine,
                                                            const LayerBindings& b,
                                                            ParamBuffers buffers) const {
  try {
    const LayerSpec& s = spec();
    const Shape& out = output_shape();
    const int64_t g = s.groups, k = s.kernel;
    const memory::desc w_md =
        g > 1 ? memory::desc({g, out.c / g, input_.c / g, k, k}, kF32, Tag::goihw)
              : memory::desc({out.c, input_.c, k, k}, kF32, Tag::oihw);
    const memory::desc bias_md({out.c}, kF32, Tag::x);
    const memory::desc src_md = ActivationDesc(input_, b.batch);
    const memory::desc dst_md = ActivationDesc(out, b.batch);
    const memory::dims strides{s.stride, s.stride};
    const memory::dims pad_l{s.padding, s.padding};
    const memory::dims pad_r{PadRight(input_.h, out.h, k, s.stride, s.padding),
                             PadRight(input_.w, out.w, k, s.stride, s.padding)};
    const bool has_bias = bias_index_ >= 0;

    memory weights(w_md, engine, buffers.params->tensor(weight_index_).data());
    memory diff_weights(w_md, engine, buffers.grads->tensor(weight_index_).data());
    memory bias, diff_bias;
    if (has_bias) {
      bias = memory(bias_md, engine, buffers.params->tensor(bias_index_).data());
      diff_bias = memory(bias_md, engine, buffers.grads->tensor(bias_index_).data());
    }

    const auto fwd_desc =
        has_bias ? dnnl::convolution_forward::desc(
                       dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                       src_md, w_md, bias_md, dst_md, strides, pad_l, pad_r)
                 : dnnl::convolution_forward::desc(
                       dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                       src_md, w_md, dst_md, strides, pad_l, pad_r);
    const dnnl::convolution_forward::primitive_desc fwd_pd(fwd_desc, ActivationAttr(s.activation),
                                                           engine);
    auto step = std::make_unique<PrimitiveStep>();
    PrimitiveArgs fwd_args{{DNNL_ARG_SRC, b.src[0]}, {DNNL_ARG_WEIGHTS, weights},
                           {DNNL_ARG_DST, b.dst}};
    if (has_bias) fwd_args[DNNL_ARG_BIAS] = bias;
    step->AddForward(dnnl::convolution_forward(fwd_pd), std::move(fwd_args));

    AddActivationBackward(s.activation, engine, b.dst, b.diff_dst, step.get());

    const auto bww_desc =
        has_bias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct,
                                                            src_md, w_md, bias_md, dst_md,
                                                            strides, pad_l, pad_r)
                 : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct,
                                                            src_md, w_md, dst_md, strides, pad_l,
                                                            pad_r);
    const dnnl::convolution_backward_weights::primitive_desc bww_pd(bww_desc, engine, fwd_pd);
    PrimitiveArgs bww_args{{DNNL_ARG_SRC, b.src[0]}, {DNNL_ARG_DIFF_DST, b.diff_dst},
                           {DNNL_ARG_DIFF_WEIGHTS, diff_weights}};
    if (has_bias) bww_args[DNNL_ARG_DIFF_BIAS] = diff_bias;
    step->AddBackward(dnnl::convolution_backward_weights(bww_pd), std::move(bww_args));

    if (HasMemory(b.diff_src[0])) {
      const dnnl::convolution_backward_data::primitive_desc bwd_pd(
          dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, src_md,
                                                w_md, dst_md, strides, pad_l, pad_r),
          engine, fwd_pd);
      step->AddBackward(dnnl::convolution_backward_data(bwd_pd),
                        {{DNNL_ARG_DIFF_DST, b.diff_dst},
                         {DNNL_ARG_WEIGHTS, weights},
                         {DNNL_ARG_DIFF_SRC, b.diff_src[0]}});
    }
    return std::unique_ptr<LayerStep>(std::move(step));
  } catch (const dnnl::error& e) {
    return DnnlError(label(), e);
  }
}

}  // namespace orrery::learner
