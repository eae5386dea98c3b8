// JobSpecToYaml writes what ParseJobSpec reads back to the same spec.
#include "scheduler/backends/job_spec_yaml.h"

#include "backend_test_util.h"
#include "gtest/gtest.h"

namespace orrery::scheduler {
namespace {

void ExpectSame(const JobSpec& a, const JobSpec& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.model_path, b.model_path);
  EXPECT_EQ(a.data_dir, b.data_dir);
  EXPECT_EQ(a.servers, b.servers);
  EXPECT_EQ(a.learners, b.learners);
  EXPECT_EQ(ProtocolToString(a.protocol), ProtocolToString(b.protocol));
  EXPECT_EQ(a.lr.base, b.lr.base);
  EXPECT_EQ(a.lr.staleness, b.lr.staleness);
  EXPECT_EQ(a.lr.momentum, b.lr.momentum);
  EXPECT_EQ(a.batch, b.batch);
  EXPECT_EQ(a.epochs, b.epochs);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.target_accuracy, b.target_accuracy);
  ASSERT_EQ(a.slow_learners.size(), b.slow_learners.size());
  for (size_t i = 0; i < a.slow_learners.size(); ++i) {
    EXPECT_EQ(a.slow_learners[i].learner, b.slow_learners[i].learner);
    EXPECT_EQ(a.slow_learners[i].factor, b.slow_learners[i].factor);
  }
  EXPECT_EQ(a.limit_train, b.limit_train);
  EXPECT_EQ(a.limit_test, b.limit_test);
  EXPECT_EQ(a.eval_every, b.eval_every);
  EXPECT_EQ(a.learner_timeout, b.learner_timeout);
  EXPECT_EQ(a.backend, b.backend);
  EXPECT_EQ(a.restart.max_restarts, b.restart.max_restarts);
  EXPECT_EQ(a.restart.backoff, b.restart.backoff);
  EXPECT_EQ(a.restart.max_backoff, b.restart.max_backoff);
  ASSERT_EQ(a.checkpoint.has_value(), b.checkpoint.has_value());
  if (a.checkpoint) {
    EXPECT_EQ(a.checkpoint->dir, b.checkpoint->dir);
    EXPECT_EQ(a.checkpoint->every, b.checkpoint->every);
  }
  EXPECT_EQ(a.precision.wire, b.precision.wire);
  EXPECT_EQ(a.precision.weights, b.precision.weights);
  EXPECT_EQ(a.precision.compute, b.precision.compute);
  EXPECT_EQ(a.bind, b.bind);
}

TEST(JobSpecYamlTest, EveryKeyRoundTrips) {
  const std::string dir = testing::FreshDir("spec");
  const std::string yaml = std::string("name: round.trip_1\nmodel: ") + ORRERY_SOURCE_DIR +
                           "/examples/models/mlp.yaml\ndata: /data/fm\nservers: 3\nlearners: 5\n"
                           "protocol: softsync:2\nlr: {base: 0.0123456789, staleness: inverse, momentum: 0.3}\n"
                           "batch: 17\nepochs: 0.1\nseed: 18446744073709551615\ntarget_accuracy: 0.875\n"
                           "slow_learners: [{learner: 1, factor: 2.5}, {learner: 4, factor: 1}]\n"
                           "limit_train: 1000\nlimit_test: 77\neval_every_seconds: 0.25\n"
                           "learner_timeout_seconds: 12.5\nbackend: slurm\n"
                           "restart: {max_restarts: 2, backoff_seconds: 0.5, max_backoff_seconds: 4}\n"
                           "checkpoint: {dir: ckpt, every_seconds: 30}\nbind: cores\n";
  absl::StatusOr<JobSpec> original = ParseJobSpec(yaml, dir);
  ASSERT_TRUE(original.ok()) << original.status();
  absl::StatusOr<JobSpec> again = ParseJobSpec(JobSpecToYaml(*original), "/nonexistent");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << JobSpecToYaml(*original);
  ExpectSame(*original, *again);
}

TEST(JobSpecYamlTest, DefaultsRoundTripAndTheFileIsWritten) {
  const std::string dir = testing::FreshDir("spec");
  JobSpec job = testing::TinyJob(dir, "tiny");
  absl::StatusOr<JobSpec> again = LoadJobSpec(dir + "/job.yaml");
  ASSERT_TRUE(again.ok()) << again.status();
  ExpectSame(job, *again);
}

}  // namespace
}  // namespace orrery::scheduler
