// `orrery learner` against a real in-process shard: precision.compute fixed16 runs the learner's
// dense layers through the same fixed-point path as `orrery train --precision fixed16`.
#include "learner/distributed_learner.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "server/shard_server.h"

namespace orrery::learner {
namespace {

struct Outcome {
  std::vector<float> weights;  // the shard's, after the learner left
  double loss_recent = 0;      // the shard's moving average of the pushed losses
};

Outcome TrainOnce(ComputeFormat compute, proto::Encoding wire) {
  server::ServerOptions so;
  so.job_id = "dl";
  so.protocol = "async";
  so.learners = 1;
  so.lr = 0.1f;
  auto shard = server::ShardServer::Start(so);
  EXPECT_TRUE(shard.ok()) << shard.status();
  if (!shard.ok()) return {};
  LearnerOptions o;
  o.servers = {(*shard)->address()};
  o.job_id = "dl";
  o.model_path = std::string(ORRERY_SOURCE_DIR) + "/examples/models/mlp.yaml";
  o.limit_train = 2000;
  o.batch = 32;
  o.epochs = 1;
  o.seed = 3;
  o.threads = 1;
  o.report_every_seconds = 1000;
  o.precision.compute = compute;
  o.wire = wire;
  const absl::Status st = RunLearner(o);
  EXPECT_TRUE(st.ok()) << st;
  proto::StatsRequest sr;
  sr.set_job_id("dl");
  auto stats = (*shard)->shard().Stats(sr);
  EXPECT_TRUE(stats.ok()) << stats.status();
  return {(*shard)->shard().DebugState().weights, stats.ok() ? stats->train_loss_recent() : 0};
}

TEST(DistributedLearnerTest, Fixed16ComputeLearnerTrainsThroughTheFixedPointLayers) {
  if (!std::filesystem::exists(kDefaultFashionMnistDir)) GTEST_SKIP() << "no dataset";
  const Outcome fp32 = TrainOnce(ComputeFormat::kFp32, proto::FP32);
  const Outcome fixed = TrainOnce(ComputeFormat::kFixed16, proto::FP32);
  const Outcome both = TrainOnce(ComputeFormat::kFixed16, proto::FIXED16);
  ASSERT_FALSE(fp32.weights.empty());
  ASSERT_EQ(fixed.weights.size(), fp32.weights.size());
  EXPECT_NE(fixed.weights, fp32.weights) << "the fixed16 GEMMs round: the gradients differ";
  std::printf("recent train loss after 62 steps: fp32 %.4f, fixed16 compute %.4f, "
              "fixed16 compute and wire %.4f\n", fp32.loss_recent, fixed.loss_recent,
              both.loss_recent);
  EXPECT_LT(fp32.loss_recent, 1.2) << "chance is ln 10 = 2.3";
  EXPECT_LT(fixed.loss_recent, fp32.loss_recent + 0.2);
  EXPECT_LT(both.loss_recent, fp32.loss_recent + 0.2);
}

TEST(DistributedLearnerTest, BadPrecisionOptionsNameTheFlag) {
  LearnerOptions o;
  o.servers = {"127.0.0.1:1"};
  o.model_path = "m.yaml";
  o.precision.compute = ComputeFormat::kFixed16;
  o.precision.fixed.fl = 31;
  absl::Status st = ValidateLearnerOptions(o);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--fl"), absl::string_view::npos) << st;
  o.precision.fixed.fl = 12;
  o.wire = proto::FIXED16;
  o.wire_fl = -1;
  st = ValidateLearnerOptions(o);
  EXPECT_NE(st.message().find("--wire-fl"), absl::string_view::npos) << st;
  o.wire_fl.reset();
  EXPECT_TRUE(ValidateLearnerOptions(o).ok());
}

}  // namespace
}  // namespace orrery::learner
