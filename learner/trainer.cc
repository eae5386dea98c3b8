#include "learner/trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "absl/strings/str_format.h"
#include "base/progress_line.h"
#include "base/status_macros.h"
#include "learner/compute_threads.h"
#include "learner/fixed_sgd.h"
#include "learner/model.h"
#include "learner/model_graph.h"
#include "learner/sgd.h"
#include "nlohmann/json.hpp"

namespace orrery::learner {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

absl::Status ValidateOptions(const TrainOptions& o) {
  if (o.model_path.empty()) return absl::InvalidArgumentError("--model: required");
  if (!(o.epochs > 0) || o.epochs > 1000) return absl::InvalidArgumentError(absl::StrFormat("--epochs: must be in (0, 1000], got %g", o.epochs));
  if (o.batch < 1 || o.batch > 65536) return absl::InvalidArgumentError(absl::StrFormat("--batch: must be in [1, 65536], got %d", o.batch));
  if (!(o.lr > 0) || !std::isfinite(o.lr)) return absl::InvalidArgumentError(absl::StrFormat("--lr: must be a positive number, got %g", o.lr));
  if (!(o.momentum >= 0 && o.momentum < 1)) return absl::InvalidArgumentError(absl::StrFormat("--momentum: must be in [0, 1), got %g", o.momentum));
  if (o.threads < 0 || o.threads > 1024) return absl::InvalidArgumentError(absl::StrFormat("--threads: must be in [0, 1024], got %d", o.threads));
  if (o.limit_train < 0) return absl::InvalidArgumentError("--limit-train: must be >= 0");
  if (o.limit_test < 0) return absl::InvalidArgumentError("--limit-test: must be >= 0");
  return ValidatePrecision(o.precision);
}

}  // namespace

absl::StatusOr<TrainReport> Train(const TrainOptions& o) {
  RETURN_IF_ERROR(ValidateOptions(o));
  SetComputeThreads(o.threads);
  const auto wall0 = Clock::now();
  ProgressLine progress;

  ASSIGN_OR_RETURN(ModelSpec spec, LoadModelSpec(o.model_path));
  ASSIGN_OR_RETURN(Dataset train, LoadFashionMnist(o.data_dir, Split::kTrain, o.limit_train));
  ASSIGN_OR_RETURN(Dataset test, LoadFashionMnist(o.data_dir, Split::kTest, o.limit_test));
  if (spec.input_channels != 1 || spec.input_height != train.rows || spec.input_width != train.cols) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: input is %dx%dx%d but the data set's images are 1x%dx%d", o.model_path,
        spec.input_channels, spec.input_height, spec.input_width, train.rows, train.cols));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Create(spec, o.seed, o.precision));
  // fp32: float master weights; fixed16: master weights on the <16 - fl, fl> grid.
  std::optional<SgdMomentum> sgd;
  std::optional<FixedSgdMomentum> fixed_sgd;
  if (o.precision.compute == ComputeFormat::kFixed16) {
    ASSIGN_OR_RETURN(fixed_sgd, FixedSgdMomentum::Create(
                                    o.lr, o.momentum, quant::FixedFormat{o.precision.fixed.fl},
                                    o.precision.fixed.weight_update_rounding(), o.seed,
                                    model->params().flat()));
  } else {
    sgd.emplace(o.lr, o.momentum, model->params().total_size());
  }

  const int64_t sample = model->input_size();
  const int64_t steps_per_epoch = std::max<int64_t>(1, train.count / o.batch);
  const int64_t total_steps =
      std::max<int64_t>(1, static_cast<int64_t>(std::llround(o.epochs * steps_per_epoch)));
  const int num_epochs = static_cast<int>((total_steps + steps_per_epoch - 1) / steps_per_epoch);

  std::vector<float> batch_images(static_cast<size_t>(o.batch * sample));
  std::vector<int32_t> batch_labels(o.batch);
  TrainReport report;
  double train_seconds = 0;
  const double prim0 = model->primitive_seconds(), step0 = model->step_seconds();
  int64_t step = 0;
  for (int epoch = 1; epoch <= num_epochs && step < total_steps; ++epoch) {
    const auto order = ShuffledOrder(train.count, o.seed * 1000003ULL + epoch);
    const auto epoch0 = Clock::now();
    double loss_sum = 0;
    int64_t epoch_steps = 0, epoch_images = 0;
    for (int64_t b = 0; b < steps_per_epoch && step < total_steps; ++b, ++step) {
      for (int i = 0; i < o.batch; ++i) {
        const int64_t idx = order[b * o.batch + i];
        std::copy_n(train.images.data() + idx * sample, sample, batch_images.data() + i * sample);
        batch_labels[i] = train.labels[idx];
      }
      ASSIGN_OR_RETURN(StepResult r, model->TrainStep(batch_images, batch_labels));
      if (!std::isfinite(r.loss)) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "training diverged at epoch %d step %d (loss %g); try a smaller --lr", epoch, b, r.loss));
      }
      if (fixed_sgd) {
        fixed_sgd->Apply(model->params().flat(), model->grads().flat());
      } else {
        sgd->Apply(model->params().flat(), model->grads().flat());
      }
      loss_sum += r.loss;
      ++epoch_steps;
      epoch_images += o.batch;
      if (o.progress) {
        const double secs = SecondsSince(epoch0);
        progress.Update(absl::StrFormat("epoch %d/%d  step %d/%d  loss %.4f  %.0f images/s", epoch,
                                        num_epochs, b + 1, steps_per_epoch, loss_sum / epoch_steps,
                                        epoch_images / std::max(secs, 1e-9)));
      }
    }
    const double epoch_seconds = SecondsSince(epoch0);
    train_seconds += epoch_seconds;
    report.train_images += epoch_images;

    ASSIGN_OR_RETURN(EvalResult eval, model->Evaluate(test.images, test.labels, kEvalBatch));
    EpochReport e;
    e.epoch = epoch;
    e.train_loss = loss_sum / std::max<int64_t>(1, epoch_steps);
    e.test_loss = eval.loss_sum / std::max<int64_t>(1, eval.count);
    e.test_accuracy = static_cast<double>(eval.correct) / std::max<int64_t>(1, eval.count);
    e.seconds = epoch_seconds;
    e.images_per_second = epoch_images / std::max(epoch_seconds, 1e-9);
    report.per_epoch.push_back(e);
    if (o.progress) {
      progress.Print(absl::StrFormat(
          "epoch %d/%d  train loss %.4f  test loss %.4f  test accuracy %.2f%%  %.0f images/s  (%.1fs)",
          epoch, num_epochs, e.train_loss, e.test_loss, 100 * e.test_accuracy, e.images_per_second,
          epoch_seconds));
    }
  }
  const EpochReport& last = report.per_epoch.back();
  report.test_accuracy = last.test_accuracy;
  report.test_loss = last.test_loss;
  report.train_loss = last.train_loss;
  report.images_per_second = report.train_images / std::max(train_seconds, 1e-9);
  report.epochs = static_cast<double>(step) / steps_per_epoch;
  report.wall_seconds = SecondsSince(wall0);
  // Evaluation also runs primitives; the share is over training steps only, so measure it there.
  const double step_secs = model->step_seconds() - step0;
  report.primitive_share = step_secs > 0 ? (model->primitive_seconds() - prim0) / step_secs : 0;
  return report;
}

std::string TrainReportJson(const TrainReport& r, const TrainOptions& o) {
  nlohmann::json j;
  j["test_accuracy"] = r.test_accuracy;
  j["test_loss"] = r.test_loss;
  j["train_loss"] = r.train_loss;
  j["images_per_second"] = r.images_per_second;
  j["wall_seconds"] = r.wall_seconds;
  j["epochs"] = r.epochs;
  j["train_images"] = r.train_images;
  j["primitive_share"] = r.primitive_share;
  j["options"] = {{"model", o.model_path}, {"data", o.data_dir}, {"batch", o.batch},
                  {"lr", o.lr},           {"momentum", o.momentum}, {"threads", o.threads},
                  {"seed", o.seed},       {"limit_train", o.limit_train},
                  {"precision", ComputeFormatName(o.precision.compute)}};
  if (o.precision.compute == ComputeFormat::kFixed16) {
    j["options"]["fl"] = o.precision.fixed.fl;
    j["options"]["activation_fl"] = o.precision.fixed.activation_fl;
    j["options"]["rounding"] = RoundingName(o.precision.fixed.rounding);
    j["options"]["update_rounding"] = RoundingName(o.precision.fixed.weight_update_rounding());
  }
  auto& per = j["per_epoch"] = nlohmann::json::array();
  for (const auto& e : r.per_epoch) {
    per.push_back({{"epoch", e.epoch}, {"train_loss", e.train_loss}, {"test_loss", e.test_loss},
                   {"test_accuracy", e.test_accuracy}, {"images_per_second", e.images_per_second},
                   {"seconds", e.seconds}});
  }
  return j.dump(2) + "\n";
}

}  // namespace orrery::learner
