#include "learner/model.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/job_limits.h"
#include "base/status_macros.h"
#include "learner/batch_plan.h"
#include "learner/layers/softmax_cross_entropy.h"
#include "learner/model_graph.h"
#include "quant/counter_rng.h"

namespace orrery::learner {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

class ModelImpl final : public Model {
 public:
  ModelImpl(ModelSpec spec, ModelGraph graph, dnnl::engine engine, PrecisionOptions precision,
            uint64_t seed)
      : spec_(std::move(spec)),
        graph_(std::move(graph)),
        engine_(std::move(engine)),
        stream_(engine_),
        precision_(precision) {
    fixed_.options = precision.fixed;
    fixed_.seed = precision.fixed.stream_salt == 0
                      ? seed
                      : quant::Mix64(seed ^ quant::Mix64(precision.fixed.stream_salt));
    fixed_.pass = &pass_;
    fixed_.threads = std::max(1, omp_get_max_threads());
  }

  // Registers and initialises parameters; called once by Create. Refuses a model beyond
  // kMaxModelParameters before allocating anything.
  absl::Status InitParams(uint64_t seed) {
    for (auto& layer : graph_.layers) layer->AddParams(&params_);
    if (params_.total_size() > kMaxModelParameters) {
      const TensorInfo& biggest = *std::ranges::max_element(
          params_.infos(), [](const TensorInfo& a, const TensorInfo& b) { return a.size < b.size; });
      return absl::InvalidArgumentError(absl::StrCat(
          "the model has ", params_.total_size(),
          " parameters, more than the ", kMaxModelParameters, " Orrery takes (4 GiB of fp32 weights); the largest tensor, ",
          biggest.name, ", has ", biggest.size));
    }
    grads_ = params_;
    params_.Finalize();
    grads_.Finalize();
    for (const auto& layer : graph_.layers) layer->InitParams(&params_, seed);
    return absl::OkStatus();
  }

  absl::StatusOr<StepResult> TrainStep(std::span<const float> images,
                                       std::span<const int32_t> labels) override {
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(CheckBatch(images, labels));
    const int64_t n = static_cast<int64_t>(labels.size());
    ASSIGN_OR_RETURN(BatchPlan * plan, PlanFor(n));
    std::ranges::copy(images, plan->input().begin());
    RETURN_IF_ERROR(Run(plan, /*backward=*/false));
    const LossSum loss =
        SoftmaxCrossEntropy(plan->logits(), labels, spec_.classes, plan->diff_logits());
    RETURN_IF_ERROR(Run(plan, /*backward=*/true));
    step_seconds_ += SecondsSince(t0);
    return StepResult{loss.loss_sum / static_cast<double>(n), loss.correct};
  }

  absl::StatusOr<EvalResult> Evaluate(std::span<const float> images,
                                      std::span<const int32_t> labels, int batch) override {
    const auto t0 = Clock::now();
    if (batch < 1) {
      return absl::InvalidArgumentError(absl::StrFormat("batch must be >= 1, got %d", batch));
    }
    RETURN_IF_ERROR(CheckBatch(images, labels));
    EvalResult result;
    const int64_t total = static_cast<int64_t>(labels.size());
    const int64_t sample = input_size();
    for (int64_t begin = 0; begin < total; begin += batch) {
      const int64_t n = std::min<int64_t>(batch, total - begin);
      ASSIGN_OR_RETURN(BatchPlan * plan, PlanFor(n));
      std::ranges::copy(images.subspan(begin * sample, n * sample), plan->input().begin());
      RETURN_IF_ERROR(Run(plan, /*backward=*/false));
      const LossSum loss =
          SoftmaxCrossEntropy(plan->logits(), labels.subspan(begin, n), spec_.classes, {});
      result.loss_sum += loss.loss_sum;
      result.correct += loss.correct;
      result.count += n;
    }
    step_seconds_ += SecondsSince(t0);
    return result;
  }

  ParamSet& params() override { return params_; }
  ParamSet& grads() override { return grads_; }
  const ModelSpec& spec() const override { return spec_; }
  const PrecisionOptions& precision() const override { return precision_; }
  int64_t input_size() const override { return graph_.input.size(); }
  double primitive_seconds() const override { return primitive_seconds_; }
  double step_seconds() const override { return step_seconds_; }

 private:
  absl::Status CheckBatch(std::span<const float> images, std::span<const int32_t> labels) const {
    const int64_t n = static_cast<int64_t>(labels.size());
    if (n <= 0) return absl::InvalidArgumentError("empty batch: no labels");
    if (static_cast<int64_t>(images.size()) != n * input_size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "images: expected %d samples of %d floats (%s) = %d floats, got %d", n, input_size(),
          graph_.input.ToString(), n * input_size(), images.size()));
    }
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] < 0 || labels[i] >= spec_.classes) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "labels[%d]: %d is outside [0, %d)", i, labels[i], spec_.classes));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<BatchPlan*> PlanFor(int64_t n) {
    auto it = plans_.find(n);
    if (it != plans_.end()) return it->second.get();
    const FixedCompute* fixed =
        precision_.compute == ComputeFormat::kFixed16 ? &fixed_ : nullptr;
    ASSIGN_OR_RETURN(std::unique_ptr<BatchPlan> plan,
                     BatchPlan::Create(graph_, engine_, ParamBuffers{&params_, &grads_}, n, fixed));
    return plans_.emplace(n, std::move(plan)).first->second.get();
  }

  // Runs the forward or backward primitives and waits for them; the time counts as oneDNN's.
  absl::Status Run(BatchPlan* plan, bool backward) {
    if (!backward) ++pass_;  // a forward pass and its backward share one set of random streams
    const auto t0 = Clock::now();
    try {
      if (backward) {
        plan->Backward(stream_);
      } else {
        plan->Forward(stream_);
      }
      stream_.wait();
    } catch (const dnnl::error& e) {
      return DnnlError(absl::StrFormat("%s %s pass (batch %d)", spec_.name,
                                       backward ? "backward" : "forward", plan->batch()),
                       e);
    }
    primitive_seconds_ += SecondsSince(t0);
    return absl::OkStatus();
  }

  ModelSpec spec_;
  ModelGraph graph_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  PrecisionOptions precision_;
  FixedCompute fixed_;   // what the fixed16 dense steps read; they borrow it
  uint64_t pass_ = 0;    // forward passes run so far
  ParamSet params_;
  ParamSet grads_;
  absl::flat_hash_map<int64_t, std::unique_ptr<BatchPlan>> plans_;
  double primitive_seconds_ = 0;
  double step_seconds_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Create(const ModelSpec& spec, uint64_t seed,
                                                     const PrecisionOptions& precision) {
  RETURN_IF_ERROR(ValidatePrecision(precision));
  ASSIGN_OR_RETURN(ModelGraph graph, BuildModelGraph(spec));
  dnnl::engine engine;
  try {
    engine = dnnl::engine(dnnl::engine::kind::cpu, 0);
  } catch (const dnnl::error& e) {
    return DnnlError("creating the oneDNN CPU engine", e);
  }
  auto model = std::make_unique<ModelImpl>(spec, std::move(graph), std::move(engine), precision,
                                           seed);
  RETURN_IF_ERROR(model->InitParams(seed));
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace orrery::learner
