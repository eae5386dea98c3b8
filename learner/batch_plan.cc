#include "learner/batch_plan.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "learner/layers/primitive_step.h"

namespace orrery::learner {
namespace {

dnnl::memory Allocate(const dnnl::memory::desc& desc, const dnnl::engine& engine) {
  dnnl::memory m(desc, engine);
  std::memset(m.get_data_handle(), 0, desc.get_size());
  return m;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BatchPlan>> BatchPlan::Create(const ModelGraph& graph,
                                                             const dnnl::engine& engine,
                                                             ParamBuffers buffers,
                                                             int64_t batch,
                                                             const FixedCompute* fixed) {
  if (batch < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("batch size must be >= 1, got %d", batch));
  }
  auto plan = std::unique_ptr<BatchPlan>(new BatchPlan());
  plan->batch_ = batch;
  const int nodes = graph.num_nodes();
  plan->input_size_ = graph.input.size();
  plan->logits_size_ = graph.layers.back()->output_shape().size();
  std::vector<int> readers(nodes, 0);
  for (const auto& ins : graph.inputs) {
    for (int node : ins) ++readers[node];
  }
  std::vector<std::vector<dnnl::memory>> sum_srcs(nodes);
  std::vector<LayerBindings> bindings(graph.layers.size());
  try {
    plan->out_.resize(nodes);
    plan->diff_.resize(nodes);
    plan->out_[0] = Allocate(ActivationDesc(graph.input, batch), engine);
    for (size_t l = 0; l < graph.layers.size(); ++l) {
      const Layer& layer = *graph.layers[l];
      const int node = static_cast<int>(l) + 1;
      const dnnl::memory::desc md = ActivationDesc(layer.output_shape(), batch);
      LayerBindings& b = bindings[l];
      b.batch = batch;
      b.index = static_cast<int>(l);
      b.fixed = fixed;
      for (int in : graph.inputs[l]) {
        b.src.push_back(plan->out_[in]);
        if (in == 0) {
          b.diff_src.emplace_back();  // nobody needs d loss/d images
        } else if (readers[in] == 1) {
          b.diff_src.push_back(plan->diff_[in]);
        } else {
          b.diff_src.push_back(Allocate(plan->out_[in].get_desc(), engine));
          sum_srcs[in].push_back(b.diff_src.back());
        }
      }
      if (layer.IsView()) {
        b.dst = View(b.src[0], md);
        b.diff_dst = b.diff_src[0] ? View(b.diff_src[0], md) : Allocate(md, engine);
      } else {
        b.dst = Allocate(md, engine);
        b.diff_dst = Allocate(md, engine);
      }
      plan->out_[node] = b.dst;
      plan->diff_[node] = b.diff_dst;
    }
    plan->sums_.resize(nodes);
    for (int node = 1; node < nodes; ++node) {
      if (sum_srcs[node].empty()) continue;
      std::vector<dnnl::memory::desc> descs;
      auto gs = std::make_unique<GradientSum>();
      for (size_t k = 0; k < sum_srcs[node].size(); ++k) {
        descs.push_back(sum_srcs[node][k].get_desc());
        gs->args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k)] = sum_srcs[node][k];
      }
      const dnnl::sum::primitive_desc pd(plan->diff_[node].get_desc(),
                                         std::vector<float>(descs.size(), 1.0f), descs, engine);
      gs->sum = dnnl::sum(pd);
      gs->args[DNNL_ARG_DST] = plan->diff_[node];
      plan->sums_[node] = std::move(gs);
    }
  } catch (const dnnl::error& e) {
    return DnnlError(absl::StrFormat("batch %d buffers", batch), e);
  }
  for (size_t l = 0; l < graph.layers.size(); ++l) {
    ASSIGN_OR_RETURN(std::unique_ptr<LayerStep> step,
                     graph.layers[l]->Build(engine, bindings[l], buffers));
    plan->steps_.push_back(std::move(step));
  }
  return plan;
}

std::span<float> BatchPlan::input() {
  return {static_cast<float*>(out_[0].get_data_handle()),
          static_cast<size_t>(batch_ * input_size_)};
}

std::span<const float> BatchPlan::logits() {
  return {static_cast<const float*>(out_.back().get_data_handle()),
          static_cast<size_t>(batch_ * logits_size_)};
}

std::span<float> BatchPlan::diff_logits() {
  return {static_cast<float*>(diff_.back().get_data_handle()),
          static_cast<size_t>(batch_ * logits_size_)};
}

void BatchPlan::Forward(dnnl::stream& stream) {
  for (auto& step : steps_) step->Forward(stream);
}

void BatchPlan::Backward(dnnl::stream& stream) {
  for (size_t l = steps_.size(); l-- > 0;) {
    if (const auto& gs = sums_[l + 1]) gs->sum.execute(stream, gs->args);
    steps_[l]->Backward(stream);
  }
}

}  // namespace orrery::learner
