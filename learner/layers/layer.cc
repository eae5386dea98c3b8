#include "learner/layers/layer.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "learner/layers/add_layer.h"
#include "learner/layers/conv_layer.h"
#include "learner/layers/dense_layer.h"
#include "learner/layers/eltwise_layer.h"
#include "learner/layers/flatten_layer.h"
#include "learner/layers/pool_layer.h"

namespace orrery::learner {

dnnl::memory::dims Shape::Dims(int64_t batch) const {
  if (flat) return {batch, c};
  return {batch, c, h, w};
}

std::string Shape::ToString() const {
  if (flat) return absl::StrCat(c);
  return absl::StrCat(c, "x", h, "x", w);
}

dnnl::memory::desc ActivationDesc(const Shape& shape, int64_t batch) {
  return dnnl::memory::desc(shape.Dims(batch), dnnl::memory::data_type::f32,
                            shape.flat ? dnnl::memory::format_tag::nc
                                       : dnnl::memory::format_tag::nchw);
}

std::string LayerLabel(int index, const std::string& name) {
  return absl::StrFormat("layers[%d] (%s)", index, name);
}

absl::Status DnnlError(const std::string& layer, const dnnl::error& e) {
  return absl::InternalError(
      absl::StrFormat("%s: oneDNN error %d: %s", layer, static_cast<int>(e.status), e.what()));
}

void FillHeUniform(std::span<float> weights, int64_t fan_in, uint64_t seed,
                   const std::string& tensor_name) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a of the name, mixed with the seed
  for (unsigned char ch : tensor_name) h = (h ^ ch) * 1099511628211ULL;
  std::mt19937_64 rng(seed ^ h);
  const double bound = std::sqrt(6.0 / static_cast<double>(std::max<int64_t>(1, fan_in)));
  for (float& w : weights) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;  // [0, 1)
    w = static_cast<float>((2.0 * u - 1.0) * bound);
  }
}

absl::StatusOr<std::unique_ptr<Layer>> CreateLayer(const LayerSpec& spec, int index,
                                                   std::span<const Shape> inputs) {
  const std::string label = LayerLabel(index, spec.name);
  const size_t want = spec.kind == LayerKind::kAdd ? 2 : 1;
  if (inputs.size() != want) {
    return absl::InvalidArgumentError(absl::StrFormat("%s.inputs: %s takes %d input(s), got %d",
                                                      label, LayerKindName(spec.kind), want,
                                                      inputs.size()));
  }
  switch (spec.kind) {
    case LayerKind::kConv:
      return ConvLayer::Create(spec, label, inputs[0]);
    case LayerKind::kDense:
      return DenseLayer::Create(spec, label, inputs[0]);
    case LayerKind::kRelu:
    case LayerKind::kRelu6:
      return EltwiseLayer::Create(spec, label, inputs[0]);
    case LayerKind::kMaxPool:
    case LayerKind::kAvgPool:
    case LayerKind::kGlobalAvgPool:
      return PoolLayer::Create(spec, label, inputs[0]);
    case LayerKind::kFlatten:
      return FlattenLayer::Create(spec, label, inputs[0]);
    case LayerKind::kAdd:
      return AddLayer::Create(spec, label, inputs[0], inputs[1]);
  }
  return absl::InvalidArgumentError(absl::StrCat(label, ".type: unknown layer kind"));
}

}  // namespace orrery::learner
