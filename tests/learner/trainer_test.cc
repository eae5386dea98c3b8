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

TEST(TrainTest, MissingDataDirectoryIsAClearError) {
  TrainOptions o = MlpOptions();
  o.data_dir = "/nonexistent/fashion";
  absl::StatusOr<TrainReport> r = Train(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/fashion"), std::string_view::npos) << r.status();
}

}  // namespace
}  // namespace orrery::learner
