// The slurm backend against a real single-node Slurm that each test starts itself
// (slurm_cluster.h): a training job submitted with sbatch succeeds, a cancel (scancel) stops
// every task, and a job Slurm refuses fails every process with Slurm's reason. Skips, saying
// why, only where Slurm cannot run (not installed, not root).
#include "scheduler/backends/slurm_backend.h"

#include "absl/strings/str_cat.h"
#include "backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "slurm_cluster.h"

namespace orrery::scheduler {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kDeadline = absl::Seconds(120);

class SlurmJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<testing::SlurmCluster>> cluster = testing::SlurmCluster::Start(dir_ + "/slurm");
    if (absl::IsNotFound(cluster.status())) GTEST_SKIP() << "Slurm cannot run here: " << cluster.status().message();
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
  }
  void TearDown() override {
    backend_.reset();  // scancels what is left before the daemons go
    cluster_.reset();
  }
  SlurmBackend& Backend(std::vector<std::string> sbatch_args = {"--overcommit"}) {
    SlurmBackend::Options o;
    o.work_dir = dir_ + "/work";
    o.env = cluster_->env();
    o.sbatch_args = std::move(sbatch_args);
    o.poll_interval = absl::Milliseconds(200);
    o.squeue_interval = absl::Milliseconds(500);
    backend_ = std::make_unique<SlurmBackend>(loop_, o);
    recorder_.Attach(*backend_);
    return *backend_;
  }
  std::vector<ProcessSpec> Processes(const JobSpec& job) {
    SlurmJobOptions o;
    o.binary = ORRERY_BINARY;
    o.job_file = dir_ + "/job.yaml";
    o.token = "slurm-test-token";
    o.log_dir = dir_ + "/logs";
    return SlurmJobProcesses(job, o);
  }

  std::string dir_ = testing::FreshDir("slurm_job");
  EventLoop loop_;
  std::unique_ptr<testing::SlurmCluster> cluster_;
  std::unique_ptr<SlurmBackend> backend_;
  testing::Recorder recorder_;
};

TEST_F(SlurmJobTest, TinyJobSucceedsThroughSbatchAndSrun) {
  JobSpec job = testing::TinyJob(dir_, "tiny-slurm");
  SlurmBackend& backend = Backend();
  absl::StatusOr<std::vector<ProcessId>> ids = backend.StartGroup(Processes(job));
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(loop_.RunUntil([&] { return backend.AllExited(); }, kDeadline)) << recorder_.Dump();
  for (const char* role : {"server-0", "learner-0", "learner-1", "evaluator"}) {
    ASSERT_EQ(recorder_.exits.count(role), 1u) << role << "\n" << recorder_.Dump();
    EXPECT_TRUE(recorder_.exits[role].status.ok()) << role << ": " << recorder_.exits[role].status.ToString() << "\n"
                                                   << recorder_.Dump();
  }
  EXPECT_TRUE(recorder_.Saw("learner-1", "ORRERY_LEARNER_DONE"));
  std::optional<nlohmann::json> eval = recorder_.FinalEval();
  ASSERT_TRUE(eval.has_value()) << recorder_.Dump();
  EXPECT_GT((*eval)["test_accuracy"].get<double>(), 0.5);
  absl::StatusOr<SlurmBackend::JobState> state = backend.SlurmJob((*ids)[0]);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->state, "COMPLETED");
  EXPECT_FALSE(state->job_id.empty());
  // The token travelled in the environment, never in the batch script.
  std::ifstream script(state->dir + "/batch.sh");
  std::string text((std::istreambuf_iterator<char>(script)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("slurm-rank"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("slurm-test-token")));
}

TEST_F(SlurmJobTest, CancelStopsEveryTask) {
  JobSpec job = testing::TinyJob(dir_, "long-slurm", /*epochs=*/200);
  const std::string job_file = dir_ + "/job.yaml";
  SlurmBackend& backend = Backend();
  absl::StatusOr<std::vector<ProcessId>> ids = backend.StartGroup(Processes(job));
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(loop_.RunUntil([this] { return recorder_.Saw("learner-0", "ORRERY_LEARNER "); }, kDeadline))
      << recorder_.Dump();
  EXPECT_GE(testing::ProcessesWith(job_file).size(), 4u);  // the ranks, and the launcher
  bool stopped = false;
  backend.StopAll(absl::Seconds(10), [&stopped] { stopped = true; });
  ASSERT_TRUE(loop_.RunUntil([&stopped] { return stopped; }, absl::Seconds(60))) << recorder_.Dump();
  EXPECT_EQ(recorder_.exits.size(), 4u);
  for (const auto& [role, exit] : recorder_.exits) EXPECT_TRUE(exit.stop_requested) << role;
  EXPECT_EQ(backend.SlurmJob((*ids)[0])->state, "CANCELLED");
  EXPECT_TRUE(testing::PollUntil(loop_, [&] { return testing::ProcessesWith(job_file).empty(); }, absl::Seconds(15)))
      << "left running: " << testing::ProcessesWith(job_file).size();
}

TEST_F(SlurmJobTest, RefusedJobFailsEveryProcessWithSlurmsReason) {
  JobSpec job = testing::TinyJob(dir_, "refused");
  SlurmBackend& backend = Backend({"--overcommit", "--partition=no-such-partition"});
  ASSERT_TRUE(backend.StartGroup(Processes(job)).ok());
  ASSERT_TRUE(loop_.RunUntil([&] { return backend.AllExited(); }, kDeadline)) << recorder_.Dump();
  EXPECT_EQ(recorder_.exits.size(), 4u);
  for (const auto& [role, exit] : recorder_.exits) {
    EXPECT_FALSE(exit.status.ok()) << role;
    EXPECT_THAT(exit.error, HasSubstr("sbatch refused the job")) << role;
    EXPECT_THAT(exit.error, HasSubstr("invalid partition")) << role;
  }
}

}  // namespace
}  // namespace orrery::scheduler
