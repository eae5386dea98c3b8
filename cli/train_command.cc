// `orrery train`: single-process training on Fashion-MNIST.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/output_file.h"
#include "learner/trainer.h"

namespace orrery::cli {

void AddTrainCommand(CLI::App& app, Commands& commands) {
  auto opts = std::make_shared<learner::TrainOptions>();
  auto metrics_out = std::make_shared<std::string>();
  CLI::App* train = app.add_subcommand("train", "Train a model in this process (SGD with momentum) and report test accuracy");
  train->add_option("--model", opts->model_path, "Model spec YAML (see examples/models/)")->required();
  train->add_option("--data", opts->data_dir, "Directory of Fashion-MNIST IDX files (.gz or plain)")->capture_default_str();
  train->add_option("--epochs", opts->epochs, "Epochs to train (fractions allowed)")->capture_default_str();
  train->add_option("--batch", opts->batch, "Minibatch size")->capture_default_str();
  train->add_option("--lr", opts->lr, "Learning rate")->capture_default_str();
  train->add_option("--momentum", opts->momentum, "Momentum coefficient in [0, 1)")->capture_default_str();
  train->add_option("--threads", opts->threads, "Compute threads (0 = one per core this process may use, no more than its cgroup's CPU quota)")->capture_default_str();
  train->add_option("--seed", opts->seed, "Seed for initialisation and shuffling")->capture_default_str();
  train->add_option("--limit-train", opts->limit_train, "Use only the first N training images (0 = all)")->capture_default_str();
  train->add_option("--limit-test", opts->limit_test, "Use only the first N test images (0 = all)")->capture_default_str();
  train->add_option("--metrics-out", *metrics_out, "Write metrics JSON here");
  train->add_flag("--quiet", [opts](int64_t) { opts->progress = false; }, "No progress output");
  auto precision = std::make_shared<std::string>("fp32");
  auto rounding_name = std::make_shared<std::string>("stochastic");
  auto update_rounding_name = std::make_shared<std::string>();
  train->add_option("--precision", *precision,
                    "Arithmetic of the dense layers and the master weights: fp32 | fixed16")
      ->check(CLI::IsMember({"fp32", "fixed16"}))
      ->capture_default_str();
  CLI::Option* fl = train->add_option(
      "--fl", opts->precision.fixed.fl,
      "fixed16: fractional bits FL of weights, biases, gradients and errors (format <16-FL, FL>)");
  fl->capture_default_str();
  CLI::Option* activation_fl = train->add_option(
      "--activation-fl", opts->precision.fixed.activation_fl,
      "fixed16: fractional bits of the dense layers' inputs and outputs");
  activation_fl->capture_default_str();
  CLI::Option* rounding =
      train->add_option("--rounding", *rounding_name,
                        "fixed16: rounding of every conversion, GEMM output and (unless "
                        "--update-rounding) weight update: stochastic | nearest")
          ->check(CLI::IsMember({"stochastic", "nearest"}))
          ->capture_default_str();
  CLI::Option* update_rounding =
      train->add_option("--update-rounding", *update_rounding_name,
                        "fixed16: rounding of the master-weight updates only: stochastic | "
                        "nearest (default: --rounding)")
          ->check(CLI::IsMember({"stochastic", "nearest"}));
  train->callback([&commands, opts, metrics_out, precision, rounding_name, update_rounding_name,
                   fl, activation_fl, rounding, update_rounding] {
    // The strings passed IsMember, so parsing cannot fail.
    opts->precision.compute = learner::ParseComputeFormat(*precision).value();
    opts->precision.fixed.rounding = learner::ParseRounding(*rounding_name).value();
    if (!update_rounding_name->empty()) {
      opts->precision.fixed.update_rounding = learner::ParseRounding(*update_rounding_name).value();
    }
    if (opts->precision.compute != learner::ComputeFormat::kFixed16) {
      for (const CLI::Option* o : {fl, activation_fl, rounding, update_rounding}) {
        if (o->count() > 0) {
          throw CLI::ValidationError(o->get_name(), "applies only with --precision fixed16");
        }
      }
    }
    commands.Set([opts, metrics_out] {
      if (absl::Status st = CheckOutputPath("--metrics-out", *metrics_out); !st.ok()) {
        std::fprintf(stderr, "orrery train: %s\n", std::string(st.message()).c_str());
        return 2;
      }
      absl::StatusOr<learner::TrainReport> report = learner::Train(*opts);
      if (!report.ok()) {
        std::fprintf(stderr, "orrery train: %s\n", std::string(report.status().message()).c_str());
        return 1;
      }
      std::printf("test_accuracy %.4f  train_loss %.4f  images/s %.0f  wall %.1fs\n",
                  report->test_accuracy, report->train_loss, report->images_per_second,
                  report->wall_seconds);
      if (!metrics_out->empty()) {
        absl::Status st = WriteOutputFile("--metrics-out", *metrics_out, learner::TrainReportJson(*report, *opts));
        if (!st.ok()) {
          std::fprintf(stderr, "orrery train: %s\n", std::string(st.message()).c_str());
          return 1;
        }
      }
      return 0;
    });
  });
}

}  // namespace orrery::cli
