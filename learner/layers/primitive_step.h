// A LayerStep that is a fixed list of oneDNN primitives with their bound arguments: most layers
// build one of these at each batch size and never touch memory themselves.
#pragma once

#include <unordered_map>
#include <utility>
#include <vector>

#include "learner/layers/layer.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace orrery::learner {

using PrimitiveArgs = std::unordered_map<int, dnnl::memory>;

class PrimitiveStep final : public LayerStep {
 public:
  // Primitives run in the order they are added.
  void AddForward(dnnl::primitive p, PrimitiveArgs args) {
    forward_.emplace_back(std::move(p), std::move(args));
  }
  void AddBackward(dnnl::primitive p, PrimitiveArgs args) {
    backward_.emplace_back(std::move(p), std::move(args));
  }

  void Forward(dnnl::stream& stream) override {
    for (auto& [p, args] : forward_) p.execute(stream, args);
  }
  void Backward(dnnl::stream& stream) override {
    for (auto& [p, args] : backward_) p.execute(stream, args);
  }

 private:
  std::vector<std::pair<dnnl::primitive, PrimitiveArgs>> forward_;
  std::vector<std::pair<dnnl::primitive, PrimitiveArgs>> backward_;
};

// Whether a binding carries memory (an empty diff_src means "gradient not needed").
inline bool HasMemory(const dnnl::memory& m) { return static_cast<bool>(m); }

// A view of `m` with another descriptor of the same size (e.g. nchw as nc).
inline dnnl::memory View(const dnnl::memory& m, const dnnl::memory::desc& desc) {
  return dnnl::memory(desc, m.get_engine(), m.get_data_handle());
}

}  // namespace orrery::learner
