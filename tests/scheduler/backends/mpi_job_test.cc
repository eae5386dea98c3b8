// A real training job through the mpi backend: `mpirun -np 4 orrery mpi-rank` (1 shard, 2
// learners, the evaluator) trains the MLP to a useful accuracy, and a cancel stops every rank.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/backends/mpi_backend.h"

namespace orrery::scheduler {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr absl::Duration kDeadline = absl::Seconds(120);

class MpiJobTest : public ::testing::Test {
 protected:
  MpiJobTest() : backend_(loop_) { recorder_.Attach(backend_); }
  std::vector<ProcessSpec> Processes(const JobSpec& job) {
    MpiJobOptions o;
    o.binary = ORRERY_BINARY;
    o.job_file = dir_ + "/job.yaml";
    o.token = "mpi-test-token";
    o.log_dir = dir_ + "/logs";
    return MpiJobProcesses(job, o);
  }
  std::string dir_ = testing::FreshDir("mpi_job");
  EventLoop loop_;
  MpiBackend backend_;
  testing::Recorder recorder_;
};

TEST_F(MpiJobTest, TinyJobSucceedsUnderMpirun) {
  JobSpec job = testing::TinyJob(dir_, "tiny-mpi");
  absl::StatusOr<std::vector<ProcessId>> ids = backend_.StartGroup(Processes(job));
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(loop_.RunUntil([this] { return backend_.AllExited(); }, kDeadline)) << recorder_.Dump();
  for (const char* role : {"server-0", "learner-0", "learner-1", "evaluator"}) {
    ASSERT_EQ(recorder_.exits.count(role), 1u) << role << "\n" << recorder_.Dump();
    EXPECT_TRUE(recorder_.exits[role].status.ok()) << role << ": " << recorder_.exits[role].status.ToString()
                                                   << "\n" << recorder_.Dump();
    EXPECT_TRUE(std::filesystem::exists(absl::StrCat(dir_, "/logs/", role, ".log")));
  }
  EXPECT_TRUE(recorder_.Saw("server-0", "ORRERY_SERVER_READY 127.0.0.1:"));
  EXPECT_TRUE(recorder_.Saw("learner-0", "ORRERY_LEARNER_DONE"));
  EXPECT_TRUE(recorder_.Saw("learner-1", "ORRERY_LEARNER_DONE"));
  std::optional<nlohmann::json> eval = recorder_.FinalEval();
  ASSERT_TRUE(eval.has_value()) << recorder_.Dump();
  EXPECT_GT((*eval)["test_accuracy"].get<double>(), 0.5);
  EXPECT_EQ((*eval)["stats"]["gradients_applied"].get<int>(), 92);  // 2 learners x 46 steps
}

TEST_F(MpiJobTest, CancelStopsEveryRank) {
  JobSpec job = testing::TinyJob(dir_, "long-mpi", /*epochs=*/200);
  const std::string job_file = dir_ + "/job.yaml";
  ASSERT_TRUE(backend_.StartGroup(Processes(job)).ok());
  ASSERT_TRUE(loop_.RunUntil([this] { return recorder_.Saw("learner-0", "ORRERY_LEARNER "); }, kDeadline))
      << recorder_.Dump();
  EXPECT_GE(testing::ProcessesWith(job_file).size(), 4u);  // the ranks, and the launcher
  bool stopped = false;
  backend_.StopAll(absl::Seconds(10), [&stopped] { stopped = true; });
  ASSERT_TRUE(loop_.RunUntil([&stopped] { return stopped; }, absl::Seconds(60))) << recorder_.Dump();
  for (const auto& [role, exit] : recorder_.exits) EXPECT_TRUE(exit.stop_requested) << role;
  EXPECT_EQ(recorder_.exits.size(), 4u);
  EXPECT_TRUE(testing::PollUntil(loop_, [&] { return testing::ProcessesWith(job_file).empty(); }, absl::Seconds(10)))
      << "left running: " << testing::ProcessesWith(job_file).size();
}

}  // namespace
}  // namespace orrery::scheduler
