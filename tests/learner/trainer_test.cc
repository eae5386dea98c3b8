// Single-process training end to end on the real Fashion-MNIST files.
#include "learner/trainer.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace orrery::learner {
namespace {

TrainOptions MlpOptions() {
  TrainOptions o;
  o.model_path = std::string(ORRERY_SOURCE_DIR) + "/examples/models/mlp.yaml";
  o.epochs = 1;
  o.batch = 32;
  o.lr = 0.05f;
  o.momentum = 0.9f;
  o.threads = 1;
  o.seed = 3;
  o.limit_train = 5000;
  o.progress = false;
  return o;
}

TEST(TrainTest, MlpOnFiveThousandImagesClearlyBeatsChanceAfterOneEpoch) {
  if (!std::filesystem::exists(kDefaultFashionMnistDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const TrainOptions o = MlpOptions();
  absl::StatusOr<TrainReport> r = Train(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->test_accuracy, 0.75) << "chance is 0.10";
  EXPECT_EQ(r->per_epoch.size(), 1u);
  EXPECT_EQ(r->train_images, 5000 / 32 * 32);
  EXPECT_GT(r->images_per_second, 0);
  EXPECT_GT(r->primitive_share, 0);
  EXPECT_LE(r->primitive_share, 1.0);

  nlohmann::json j = nlohmann::json::parse(TrainReportJson(*r, o));
  for (const char* key : {"test_accuracy", "train_loss", "images_per_second", "wall_seconds", "epochs"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_DOUBLE_EQ(j["test_accuracy"].get<double>(), r->test_accuracy);
}

TEST(TrainTest, SameSeedGivesTheSameResult) {
  if (!std::filesystem::exists(kDefaultFashionMnistDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TrainOptions o = MlpOptions();
  o.limit_train = 1000;
  o.limit_test = 500;
  absl::StatusOr<TrainReport> a = Train(o);
  absl::StatusOr<TrainReport> b = Train(o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->test_accuracy, b->test_accuracy);
  EXPECT_EQ(a->train_loss, b->train_loss);
}

TEST(TrainTest, BadOptionsAreRejectedNamingTheFlag) {
  struct Case {
    void (*mutate)(TrainOptions&);
    const char* flag;
  };
  const Case cases[] = {
      {[](TrainOptions& o) { o.model_path.clear(); }, "--model"},
      {[](TrainOptions& o) { o.epochs = 0; }, "--epochs"},
      {[](TrainOptions& o) { o.batch = 0; }, "--batch"},
      {[](TrainOptions& o) { o.lr = -1; }, "--lr"},
      {[](TrainOptions& o) { o.momentum = 1; }, "--momentum"},
      {[](TrainOptions& o) { o.threads = -1; }, "--threads"},
      {[](TrainOptions& o) { o.limit_train = -5; }, "--limit-train"},
      {[](TrainOptions& o) { o.limit_test = -5; }, "--limit-test"},
      {[](TrainOptions& o) {
         o.precision.compute = ComputeFormat::kFixed16;
         o.precision.fixed.fl = 31;
       },
       "--fl"},
      {[](TrainOptions& o) {
         o.precision.compute = ComputeFormat::kFixed16;
         o.precision.fixed.fl = -1;
       },
       "--fl"},
      {[](TrainOptions& o) {
         o.precision.compute = ComputeFormat::kFixed16;
         o.precision.fixed.activation_fl = 40;
       },
       "--activation-fl"},
  };
  for (const Case& c : cases) {
    TrainOptions o = MlpOptions();
    c.mutate(o);
    absl::StatusOr<TrainReport> r = Train(o);
    ASSERT_FALSE(r.ok()) << c.flag;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.flag;
    EXPECT_NE(r.status().message().find(c.flag), std::string_view::npos) << r.status();
  }
}

TEST(TrainTest, Fixed16StochasticMlpTrainsLikeFloat) {
  if (!std::filesystem::exists(kDefaultFashionMnistDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TrainOptions o = MlpOptions();
  o.limit_test = 2000;
  o.precision.compute = ComputeFormat::kFixed16;
  o.precision.fixed.fl = 12;
  o.precision.fixed.rounding = quant::Rounding::kStochastic;
  absl::StatusOr<TrainReport> r = Train(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->test_accuracy, 0.75) << "float reaches > 0.75 on the same 5,000 images";
  nlohmann::json j = nlohmann::json::parse(TrainReportJson(*r, o));
  EXPECT_EQ(j["options"]["precision"], "fixed16");
  EXPECT_EQ(j["options"]["fl"], 12);
  EXPECT_EQ(j["options"]["rounding"], "stochastic");
}

TEST(TrainTest, Fixed16NearestWithFewFractionalBitsLosesSmallUpdates) {
  // At FL = 6 (eps = 1/64) almost every update lr * v is below eps / 2: round-to-nearest keeps
  // the weights where they started, stochastic rounding still learns.
  if (!std::filesystem::exists(kDefaultFashionMnistDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TrainOptions o = MlpOptions();
  o.limit_train = 2000;
  o.limit_test = 1000;
  o.lr = 0.01f;
  o.momentum = 0.0f;
  o.precision.compute = ComputeFormat::kFixed16;
  o.precision.fixed.fl = 6;
  o.precision.fixed.rounding = quant::Rounding::kNearest;
  absl::StatusOr<TrainReport> nearest = Train(o);
  o.precision.fixed.rounding = quant::Rounding::kStochastic;
  absl::StatusOr<TrainReport> stochastic = Train(o);
  ASSERT_TRUE(nearest.ok() && stochastic.ok());
  EXPECT_GT(stochastic->test_accuracy, nearest->test_accuracy + 0.1)
      << "stochastic " << stochastic->test_accuracy << " nearest " << nearest->test_accuracy;
}

TEST(TrainTest, Fixed16NearestWeightUpdatesAloneLoseSubEpsilonUpdates) {
  // Stochastic compute, nearest rounding only where the master weights are updated: without
  // momentum, lr * g is mostly below eps / 2 at FL = 8 and the weights barely move.
  if (!std::filesystem::exists(kDefaultFashionMnistDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TrainOptions o = MlpOptions();
  o.limit_train = 3000;
  o.limit_test = 1000;
  o.lr = 0.02f;
  o.momentum = 0.0f;
  o.precision.compute = ComputeFormat::kFixed16;
  o.precision.fixed.fl = 8;
  o.precision.fixed.rounding = quant::Rounding::kStochastic;
  o.precision.fixed.update_rounding = quant::Rounding::kNearest;
  absl::StatusOr<TrainReport> nearest = Train(o);
  o.precision.fixed.update_rounding = quant::Rounding::kStochastic;
  absl::StatusOr<TrainReport> stochastic = Train(o);
  ASSERT_TRUE(nearest.ok() && stochastic.ok());
  EXPECT_LT(stochastic->train_loss, nearest->train_loss - 0.3)
      << "stochastic " << stochastic->train_loss << " nearest " << nearest->train_loss;
  EXPECT_GT(stochastic->test_accuracy, nearest->test_accuracy + 0.05)
      << "stochastic " << stochastic->test_accuracy << " nearest " << nearest->test_accuracy;
}

TEST(TrainTest, Fixed16SameSeedGivesTheSameResult) {
  if (!std::filesystem::exists(kDefaultFashionMnistDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TrainOptions o = MlpOptions();
  o.limit_train = 1000;
  o.limit_test = 500;
  o.precision.compute = ComputeFormat::kFixed16;
  absl::StatusOr<TrainReport> a = Train(o);
  absl::StatusOr<TrainReport> b = Train(o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->test_accuracy, b->test_accuracy);
  EXPECT_EQ(a->train_loss, b->train_loss);
}

TEST(TrainTest, MissingDataDirectoryIsAClearError) {
  TrainOptions o = MlpOptions();
  o.data_dir = "/nonexistent/fashion";
  absl::StatusOr<TrainReport> r = Train(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/fashion"), std::string_view::npos) << r.status();
}

}  // namespace
}  // namespace orrery::learner
