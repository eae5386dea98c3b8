#include "learner/layers/pool_layer.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "learner/layers/primitive_step.h"

namespace orrery::learner {

absl::StatusOr<std::unique_ptr<Layer>> PoolLayer::Create(const LayerSpec& spec, std::string label,
                                                         const Shape& input) {
  if (input.flat) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s.inputs: %s needs a CxHxW input, got a flat vector of %d", label,
                        LayerKindName(spec.kind), input.c));
  }
  Shape out = input;
  if (spec.kind == LayerKind::kGlobalAvgPool) {
    out.h = out.w = 1;
    return std::unique_ptr<Layer>(new PoolLayer(spec, std::move(label), input, out));
  }
  if (spec.kernel < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s.kernel: must be >= 1", label));
  }
  if (spec.stride < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s.stride: must be >= 1", label));
  }
  if (spec.padding < 0 || spec.padding >= spec.kernel) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.padding: must be in [0, kernel), got %d", label, spec.padding));
  }
  const int64_t ph = input.h + 2 * spec.padding, pw = input.w + 2 * spec.padding;
  if (spec.kernel > ph || spec.kernel > pw) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.kernel: %d is larger than the padded input (%dx%d with padding %d)", label,
        spec.kernel, input.h, input.w, spec.padding));
  }
  out.h = (ph - spec.kernel) / spec.stride + 1;
  out.w = (pw - spec.kernel) / spec.stride + 1;
  return std::unique_ptr<Layer>(new PoolLayer(spec, std::move(label), input, out));
}

absl::StatusOr<std::unique_ptr<LayerStep>> PoolLayer::Build(const dnnl::engine& engine,
                                                            const LayerBindings& b,
                                                            ParamBuffers /*buffers*/) const {
  try {
    const LayerSpec& s = spec();
    const Shape& out = output_shape();
    dnnl::memory::dims kernel, strides, pad_l, pad_r;
    dnnl::algorithm alg = dnnl::algorithm::pooling_avg_exclude_padding;
    if (s.kind == LayerKind::kGlobalAvgPool) {
      kernel = {input_.h, input_.w};
      strides = {1, 1};
      pad_l = pad_r = {0, 0};
    } else {
      if (s.kind == LayerKind::kMaxPool) alg = dnnl::algorithm::pooling_max;
      kernel = {s.kernel, s.kernel};
      strides = {s.stride, s.stride};
      pad_l = {s.padding, s.padding};
      // Floor-mode output: the right padding only needs to cover the last full window.
      pad_r = {std::max<int64_t>(0, (out.h - 1) * s.stride + s.kernel - input_.h - s.padding),
               std::max<int64_t>(0, (out.w - 1) * s.stride + s.kernel - input_.w - s.padding)};
    }
    const dnnl::memory::desc src_md = ActivationDesc(input_, b.batch);
    const dnnl::memory::desc dst_md = ActivationDesc(out, b.batch);
    const dnnl::pooling_forward::primitive_desc fwd_pd(
        dnnl::pooling_forward::desc(dnnl::prop_kind::forward_training, alg, src_md, dst_md,
                                    strides, kernel, pad_l, pad_r),
        engine);
    auto step = std::make_unique<PrimitiveStep>();
    PrimitiveArgs fwd_args{{DNNL_ARG_SRC, b.src[0]}, {DNNL_ARG_DST, b.dst}};
    dnnl::memory workspace;
    if (alg == dnnl::algorithm::pooling_max) {
      workspace = dnnl::memory(fwd_pd.workspace_desc(), engine);
      fwd_args[DNNL_ARG_WORKSPACE] = workspace;
    }
    step->AddForward(dnnl::pooling_forward(fwd_pd), std::move(fwd_args));
    if (HasMemory(b.diff_src[0])) {
      const dnnl::pooling_backward::primitive_desc bwd_pd(
          dnnl::pooling_backward::desc(alg, src_md, dst_md, strides, kernel, pad_l, pad_r),
          engine, fwd_pd);
      PrimitiveArgs bwd_args{{DNNL_ARG_DIFF_DST, b.diff_dst}, {DNNL_ARG_DIFF_SRC, b.diff_src[0]}};
      if (workspace) bwd_args[DNNL_ARG_WORKSPACE] = workspace;
      step->AddBackward(dnnl::pooling_backward(bwd_pd), std::move(bwd_args));
    }
    return std::unique_ptr<LayerStep>(std::move(step));
  } catch (const dnnl::error& e) {
    return DnnlError(label(), e);
  }
}

}  // namespace orrery::learner
