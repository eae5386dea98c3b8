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
    // oneDNN picks the layouts its fastest kernels want; reorders bridge to the plain ones.
    const memory::desc w_any(w_md.dims(), kF32, Tag::any);
    const memory::desc src_any(src_md.dims(), kF32, Tag::any);
    const memory::desc dst_any(dst_md.dims(), kF32, Tag::any);
    const memory::dims strides{s.stride, s.stride};
    const memory::dims pad_l{s.padding, s.padding};
    const memory::dims pad_r{PadRight(input_.h, out.h, k, s.stride, s.padding),
                             PadRight(input_.w, out.w, k, s.stride, s.padding)};
    const bool has_bias = bias_index_ >= 0;
    const auto direct = dnnl::algorithm::convolution_direct;

    const memory weights(w_md, engine, buffers.params->tensor(weight_index_).data());
    const memory diff_weights(w_md, engine, buffers.grads->tensor(weight_index_).data());
    memory bias, diff_bias;
    if (has_bias) {
      bias = memory(bias_md, engine, buffers.params->tensor(bias_index_).data());
      diff_bias = memory(bias_md, engine, buffers.grads->tensor(bias_index_).data());
    }
    auto step = std::make_unique<PrimitiveStep>();
    // `m` in layout `want`: m itself, or a new buffer filled by a reorder added to the step.
    auto in_layout = [&](const memory& m, const memory::desc& want, bool forward) {
      if (m.get_desc() == want) return m;
      memory converted(want, engine);
      PrimitiveArgs args{{DNNL_ARG_FROM, m}, {DNNL_ARG_TO, converted}};
      if (forward) {
        step->AddForward(dnnl::reorder(m, converted), std::move(args));
      } else {
        step->AddBackward(dnnl::reorder(m, converted), std::move(args));
      }
      return converted;
    };
    // A buffer in layout `have` whose contents end up in `m` (a reorder runs after `add`).
    auto out_layout = [&](const memory& m, const memory::desc& have) {
      return m.get_desc() == have ? m : memory(have, engine);
    };
    auto copy_back = [&](const memory& from, const memory& to, bool forward) {
      if (from.get_data_handle() == to.get_data_handle()) return;
      PrimitiveArgs args{{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
      if (forward) {
        step->AddForward(dnnl::reorder(from, to), std::move(args));
      } else {
        step->AddBackward(dnnl::reorder(from, to), std::move(args));
      }
    };

    const auto fwd_desc =
        has_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, direct,
                                                   src_any, w_any, bias_md, dst_any, strides,
                                                   pad_l, pad_r)
                 : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, direct,
                                                   src_any, w_any, dst_any, strides, pad_l,
                                                   pad_r);
    const dnnl::convolution_forward::primitive_desc fwd_pd(fwd_desc, ActivationAttr(s.activation),
                                                           engine);
    const memory src = in_layout(b.src[0], fwd_pd.src_desc(), true);
    const memory fwd_weights = in_layout(weights, fwd_pd.weights_desc(), true);
    const memory dst = out_layout(b.dst, fwd_pd.dst_desc());
    PrimitiveArgs fwd_args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, fwd_weights},
                           {DNNL_ARG_DST, dst}};
    if (has_bias) fwd_args[DNNL_ARG_BIAS] = bias;
    step->AddForward(dnnl::convolution_forward(fwd_pd), std::move(fwd_args));
    copy_back(dst, b.dst, true);

    AddActivationBackward(s.activation, engine, b.dst, b.diff_dst, step.get());

    const auto bww_desc =
        has_bias ? dnnl::convolution_backward_weights::desc(direct, src_any, w_any, bias_md,
                                                            dst_any, strides, pad_l, pad_r)
                 : dnnl::convolution_backward_weights::desc(direct, src_any, w_any, dst_any,
                                                            strides, pad_l, pad_r);
    const dnnl::convolution_backward_weights::primitive_desc bww_pd(bww_desc, engine, fwd_pd);
    const memory bww_src =
        src.get_desc() == bww_pd.src_desc() ? src : in_layout(b.src[0], bww_pd.src_desc(), false);
    const memory diff_dst = in_layout(b.diff_dst, bww_pd.diff_dst_desc(), false);
    const memory bww_diff_weights = out_layout(diff_weights, bww_pd.diff_weights_desc());
    PrimitiveArgs bww_args{{DNNL_ARG_SRC, bww_src}, {DNNL_ARG_DIFF_DST, diff_dst},
                           {DNNL_ARG_DIFF_WEIGHTS, bww_diff_weights}};
    if (has_bias) bww_args[DNNL_ARG_DIFF_BIAS] = diff_bias;
    step->AddBackward(dnnl::convolution_backward_weights(bww_pd), std::move(bww_args));
    copy_back(bww_diff_weights, diff_weights, false);

    if (HasMemory(b.diff_src[0])) {
      const dnnl::convolution_backward_data::primitive_desc bwd_pd(
          dnnl::convolution_backward_data::desc(direct, src_any, w_any, dst_any, strides, pad_l,
                                                pad_r),
          engine, fwd_pd);
      const memory bwd_weights = fwd_weights.get_desc() == bwd_pd.weights_desc()
                                     ? fwd_weights
                                     : in_layout(weights, bwd_pd.weights_desc(), false);
      const memory bwd_diff_dst = diff_dst.get_desc() == bwd_pd.diff_dst_desc()
                                      ? diff_dst
                                      : in_layout(b.diff_dst, bwd_pd.diff_dst_desc(), false);
      const memory diff_src = out_layout(b.diff_src[0], bwd_pd.diff_src_desc());
      step->AddBackward(dnnl::convolution_backward_data(bwd_pd),
                        {{DNNL_ARG_DIFF_DST, bwd_diff_dst},
                         {DNNL_ARG_WEIGHTS, bwd_weights},
                         {DNNL_ARG_DIFF_SRC, diff_src}});
      copy_back(diff_src, b.diff_src[0], false);
    }
    return std::unique_ptr<LayerStep>(std::move(step));
  } catch (const dnnl::error& e) {
    return DnnlError(label(), e);
  }
}

}  // namespace orrery::learner
