// Single-process training (`orrery train`): SGD with momentum on Fashion-MNIST, with progress
// output and a metrics report.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/fashion_mnist.h"
#include "learner/precision.h"

namespace orrery::learner {

struct TrainOptions {
  std::string model_path;                       // model spec YAML
  std::string data_dir = kDefaultFashionMnistDir;
  double epochs = 1;                            // fractional epochs allowed
  int batch = 64;
  float lr = 0.05f;
  float momentum = 0.9f;
  int threads = 0;                              // 0 = one per usable core (SetComputeThreads)
  uint64_t seed = 1;
  int64_t limit_train = 0;                      // 0 = all 60,000 training images
  int64_t limit_test = 0;                       // 0 = all 10,000 test images
  bool progress = true;                         // progress lines on stderr
  // --precision, --fl, --activation-fl, --rounding. In fixed16 mode the dense layers compute in
  // fixed point and the master weights live on the <16 - fl, fl> grid (FixedSgdMomentum).
  PrecisionOptions precision;
};

struct EpochReport {
  int epoch = 0;
  double train_loss = 0;
  double test_loss = 0;
  double test_accuracy = 0;
  double images_per_second = 0;
  double seconds = 0;
};

struct TrainReport {
  double test_accuracy = 0;
  double test_loss = 0;
  double train_loss = 0;          // mean over the last epoch
  double images_per_second = 0;   // training images / training seconds (evaluation excluded)
  double wall_seconds = 0;
  double epochs = 0;
  int64_t train_images = 0;
  double primitive_share = 0;     // share of training-step time inside oneDNN primitives
  std::vector<EpochReport> per_epoch;
};

// Loads data and model, trains, evaluates after each epoch. Errors: bad spec, bad data, bad options.
absl::StatusOr<TrainReport> Train(const TrainOptions& options);

// The report as JSON text (keys as in TrainReport; per_epoch as a list).
std::string TrainReportJson(const TrainReport& report, const TrainOptions& options);

}  // namespace orrery::learner
