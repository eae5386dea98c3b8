// Test harness for one layer on its own: builds the layer for given input shapes and batch,
// owns its buffers, and runs forward/backward so tests can compare against references and
// finite differences. Used by layers_forward_test.cc and layers_gradient_test.cc.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/layers/layer.h"
#include "learner/layers/primitive_step.h"
#include "learner/param_set.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace orrery::learner::testing {

class SingleLayer {
 public:
  // Every input gets a gradient buffer (so backward data paths run); params are He-uniform
  // from `seed`, biases then set to small random values so they matter in forward checks.
  // A non-null `fixed` (borrowed, must outlive the layer) builds the fixed16 step.
  static absl::StatusOr<std::unique_ptr<SingleLayer>> Make(const LayerSpec& spec,
                                                           std::vector<Shape> inputs,
                                                           int64_t batch, uint64_t seed,
                                                           const FixedCompute* fixed = nullptr) {
    auto t = std::unique_ptr<SingleLayer>(new SingleLayer());
    auto layer = CreateLayer(spec, 0, inputs);
    if (!layer.ok()) return layer.status();
    t->layer_ = std::move(layer).value();
    t->layer_->AddParams(&t->params_);
    t->grads_ = t->params_;
    t->params_.Finalize();
    t->grads_.Finalize();
    t->layer_->InitParams(&t->params_, seed);
    std::mt19937_64 rng(seed + 17);
    std::uniform_real_distribution<float> u(-0.5f, 0.5f);
    for (const TensorInfo& info : t->params_.infos()) {
      if (info.name.ends_with(".bias")) {
        const std::span<float> bias = t->params_.tensor(info.name).value();
        for (float& v : bias) v = u(rng);
      }
    }
    const Shape out = t->layer_->output_shape();
    LayerBindings& b = t->bindings_;
    b.batch = batch;
    b.fixed = fixed;
    for (const Shape& in : inputs) {
      b.src.emplace_back(ActivationDesc(in, batch), t->engine_);
      b.diff_src.emplace_back(ActivationDesc(in, batch), t->engine_);
    }
    const auto md = ActivationDesc(out, batch);
    b.dst = t->layer_->IsView() ? View(b.src[0], md) : dnnl::memory(md, t->engine_);
    b.diff_dst = dnnl::memory(md, t->engine_);
    auto step = t->layer_->Build(t->engine_, b, ParamBuffers{&t->params_, &t->grads_});
    if (!step.ok()) return step.status();
    t->step_ = std::move(step).value();
    return t;
  }

  std::span<float> src(int k) { return Span(bindings_.src[k]); }
  std::span<float> diff_src(int k) { return Span(bindings_.diff_src[k]); }
  std::span<float> dst() { return Span(bindings_.dst); }
  ParamSet& params() { return params_; }
  ParamSet& grads() { return grads_; }
  const Layer& layer() const { return *layer_; }

  std::vector<float> Forward() {
    step_->Forward(stream_);
    stream_.wait();
    auto d = dst();
    return std::vector<float>(d.begin(), d.end());
  }

  // Backward with d loss/d dst = `diff_dst` (after a Forward on the same inputs).
  void Backward(std::span<const float> diff_dst) {
    std::memcpy(bindings_.diff_dst.get_data_handle(), diff_dst.data(),
                diff_dst.size() * sizeof(float));
    step_->Backward(stream_);
    stream_.wait();
  }

 private:
  SingleLayer() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  static std::span<float> Span(const dnnl::memory& m) {
    return {static_cast<float*>(m.get_data_handle()), m.get_desc().get_size() / sizeof(float)};
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::unique_ptr<Layer> layer_;
  ParamSet params_;
  ParamSet grads_;
  LayerBindings bindings_;
  std::unique_ptr<LayerStep> step_;
};

inline void FillUniform(std::span<float> v, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (float& x : v) x = u(rng);
}

inline LayerSpec Conv(int filters, int kernel, int stride, int padding, int groups,
                      Activation act = Activation::kNone, bool bias = true) {
  LayerSpec s;
  s.name = "conv";
  s.kind = LayerKind::kConv;
  s.filters = filters;
  s.kernel = kernel;
  s.stride = stride;
  s.padding = padding;
  s.groups = groups;
  s.activation = act;
  s.bias = bias;
  return s;
}

inline LayerSpec Dense(int units, Activation act = Activation::kNone, bool bias = true) {
  LayerSpec s;
  s.name = "fc";
  s.kind = LayerKind::kDense;
  s.units = units;
  s.activation = act;
  s.bias = bias;
  return s;
}

inline LayerSpec Simple(LayerKind kind, int kernel = 0, int stride = 1, int padding = 0) {
  LayerSpec s;
  s.name = "layer";
  s.kind = kind;
  s.kernel = kernel;
  s.stride = stride;
  s.padding = padding;
  if (kind == LayerKind::kAdd) s.inputs = {"a", "b"};
  return s;
}

inline Shape Chw(int64_t c, int64_t h, int64_t w) { return Shape{c, h, w, false}; }
inline Shape Flat(int64_t c) { return Shape{c, 1, 1, true}; }

}  // namespace orrery::learner::testing
