// Jobs with `backend: slurm` submitted to a real `orrery scheduler` against a real single-node
// Slurm that the test starts itself (slurm_cluster.h): the daemon sbatches them, follows them to
// succeeded, and cancels them (scancel; every task stops). Skips, saying why, only where Slurm
// cannot run (not installed, not root).
#include <string>

#include "absl/strings/str_cat.h"
#include "backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "slurm_cluster.h"
#include "tests/util/scheduler_daemon_fixture.h"

namespace orrery::scheduler::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kSlurm[] = "backend: slurm\n";

class SchedulerSlurmTest : public SchedulerDaemonFixture {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster = SlurmCluster::Start((dir_ / "slurm").string());
    if (absl::IsNotFound(cluster.status())) GTEST_SKIP() << "Slurm cannot run here: " << cluster.status().message();
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    // The one node has fewer cores than a job has tasks: --overcommit lets them share.
    StartDaemon(2, {"--sbatch-arg=--overcommit"}, cluster_->env());
  }
  void TearDown() override {
    stub_.reset();
    if (daemon_running_) StopDaemon();
    cluster_.reset();
  }
  std::unique_ptr<SlurmCluster> cluster_;
};

TEST_F(SchedulerSlurmTest, SubmittedSlurmJobSucceeds) {
  const int64_t id = SubmitOk(TinyJobYaml("tiny-slurm", kSlurm));
  EXPECT_EQ(Get(id).slots(), 0) << "Slurm finds the cores; the scheduler's slots stay free";
  const proto::Job job = WaitUntilEnded(id);
  ASSERT_EQ(job.state(), proto::JOB_SUCCEEDED) << job.reason();
  EXPECT_EQ(job.backend(), "slurm");
  EXPECT_GT(job.test_accuracy(), 0.3) << "chance is 0.1";
  ASSERT_EQ(job.processes_size(), 3);
  for (const proto::JobProcess& p : job.processes()) EXPECT_THAT(p.exit(), HasSubstr("exit code 0")) << p.role();
  CliResult logs = Cli(absl::StrCat("logs ", id));
  ASSERT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_THAT(logs.out, HasSubstr("job1:evaluator out| ORRERY_EVAL "));
}

TEST_F(SchedulerSlurmTest, CancelStopsEveryTask) {
  const int64_t id = SubmitOk(SlowJobYaml("slow-slurm", kSlurm));
  const proto::Job running = WaitUntilPidsKnown(id);
  Cancel(id);
  const proto::Job job = WaitUntilEnded(id);
  EXPECT_EQ(job.state(), proto::JOB_CANCELLED) << job.reason();
  for (const proto::JobProcess& p : running.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
  EXPECT_TRUE(PollUntil(loop_, [&] { return ProcessesWith(JobFile(id)).empty(); }, absl::Seconds(30)))
      << "a task outlived the cancel";
}

}  // namespace
}  // namespace orrery::scheduler::testing
