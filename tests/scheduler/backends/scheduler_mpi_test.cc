// Jobs with `backend: mpi` submitted to a real `orrery scheduler`: the daemon launches them with a
// real mpirun (ranks `orrery mpi-rank`), follows them to succeeded, cancels them (every rank
// stops), and after being killed with -9 re-attaches to a launch that is still running, which
// can be cancelled or runs to its end with its result.
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/scheduler_daemon_fixture.h"

namespace orrery::scheduler::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kMpi[] = "backend: mpi\n";

class SchedulerMpiTest : public SchedulerDaemonFixture {};

TEST_F(SchedulerMpiTest, SubmittedMpiJobSucceeds) {
  StartDaemon(4);
  const int64_t id = SubmitOk(TinyJobYaml("tiny-mpi", kMpi));
  const proto::Job job = WaitUntilEnded(id);
  ASSERT_EQ(job.state(), proto::JOB_SUCCEEDED) << job.reason();
  EXPECT_EQ(job.backend(), "mpi");
  EXPECT_GT(job.test_accuracy(), 0.3) << "chance is 0.1";
  nlohmann::json result = nlohmann::json::parse(job.result_json());
  EXPECT_DOUBLE_EQ(result["test_accuracy"].get<double>(), job.test_accuracy());
  EXPECT_GT(result["updates_applied"].get<int>(), 0);
  ASSERT_EQ(job.processes_size(), 3);
  for (const proto::JobProcess& p : job.processes()) EXPECT_THAT(p.exit(), HasSubstr("exit code 0")) << p.role();

  // Logs of every rank, through the CLI; the ranks announced themselves to mpirun's launch.
  CliResult logs = Cli(absl::StrCat("logs ", id));
  ASSERT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_THAT(logs.out, HasSubstr("job1:server-0 out| ORRERY_RANK "));
  EXPECT_THAT(logs.out, HasSubstr("job1:evaluator out| ORRERY_EVAL "));
  CliResult status = Cli(absl::StrCat("status ", id, " --output json"));
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(nlohmann::json::parse(status.out)["backend"], "mpi");
}

TEST_F(SchedulerMpiTest, CancelStopsEveryRank) {
  StartDaemon(4);
  const int64_t id = SubmitOk(SlowJobYaml("slow-mpi", kMpi));
  const proto::Job running = WaitUntilPidsKnown(id);
  EXPECT_GE(ProcessesWith(JobFile(id)).size(), 3u) << "the ranks run `orrery mpi-rank " << JobFile(id) << "`";
  // A rank shard serves Prometheus metrics as a local one does.
  const std::string shard_metrics = ShardMetricsAddress(id);
  ASSERT_FALSE(shard_metrics.empty()) << "no ORRERY_SERVER_METRICS line in the job's logs";
  EXPECT_THAT(Scrape(shard_metrics), HasSubstr("orrery_shard_pushes_total{job=\"slow-mpi\",shard=\"0\"}"));
  Cancel(id);
  const proto::Job job = WaitUntilEnded(id);
  EXPECT_EQ(job.state(), proto::JOB_CANCELLED) << job.reason();
  for (const proto::JobProcess& p : running.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
  EXPECT_THAT(ProcessesWith(JobFile(id)), ::testing::IsEmpty()) << "a rank or mpirun outlived the cancel";
}

TEST_F(SchedulerMpiTest, KillNineThenRestartReattachesToTheRunningLaunch) {
  StartDaemon(4);
  const int64_t id = SubmitOk(SlowJobYaml("survivor-mpi", kMpi));
  const proto::Job before = WaitUntilPidsKnown(id);
  SignalDaemonAndWait(SIGKILL);
  for (const proto::JobProcess& p : before.processes()) EXPECT_TRUE(Alive(p.pid())) << p.role() << " died with the scheduler";

  StartDaemon(4);
  const proto::Job after = Get(id);
  ASSERT_EQ(after.state(), proto::JOB_RUNNING) << after.reason();
  EXPECT_TRUE(after.reattached());
  Cancel(id);
  const proto::Job cancelled = WaitUntilEnded(id);
  EXPECT_EQ(cancelled.state(), proto::JOB_CANCELLED) << cancelled.reason();
  for (const proto::JobProcess& p : before.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
  EXPECT_TRUE(PollUntil(loop_, [&] { return ProcessesWith(JobFile(id)).empty(); }, absl::Seconds(20)))
      << "mpirun outlived its ranks";
}

TEST_F(SchedulerMpiTest, ALaunchReattachedAfterKillNineEndsWithItsResult) {
  StartDaemon(4);
  // Slow enough to outlive the restart; the ranks end by themselves and the restarted daemon
  // reads the result from the events files the learner and evaluator ranks wrote.
  const int64_t id = SubmitOk(TinyJobYaml("outlives-mpi", absl::StrCat(kMpi, "slow_learners: [{learner: 0, factor: 40}]\n")));
  const proto::Job before = WaitUntilPidsKnown(id);
  SignalDaemonAndWait(SIGKILL);
  StartDaemon(4);
  const proto::Job done = WaitUntilEnded(id);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  EXPECT_TRUE(done.reattached());
  EXPECT_GT(done.test_accuracy(), 0.3) << "chance is 0.1";
  EXPECT_EQ(nlohmann::json::parse(done.result_json())["learners_finished"], 1);
  for (const proto::JobProcess& p : before.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
}

TEST_F(SchedulerMpiTest, SubmitBackendFlagOverridesTheSpec) {
  StartDaemon(4);
  std::ofstream(dir_ / "job.yaml") << TinyJobYaml("local-spec");  // no backend: key, so local
  CliResult r = Cli(absl::StrCat("submit --backend mpi ", (dir_ / "job.yaml").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const proto::Job job = WaitUntilEnded(1);
  EXPECT_EQ(job.backend(), "mpi");
  ASSERT_EQ(job.state(), proto::JOB_SUCCEEDED) << job.reason();
  CliResult logs = Cli("logs 1");
  EXPECT_THAT(logs.out, HasSubstr("ORRERY_RANK ")) << "it ran as mpirun's ranks";
  r = Cli(absl::StrCat("submit --backend pbs ", (dir_ / "job.yaml").string()));
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

TEST_F(SchedulerMpiTest, JobFailsWithTheReasonWhenEveryLearnerRankFails) {
  // The test set is real (the evaluator works); the training images are corrupt.
  const fs::path data = dir_ / "data";
  fs::create_directories(data);
  const std::string real = "/usr/share/datasets/fashion-mnist";
  for (const char* f : {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"}) {
    fs::create_symlink(real + "/" + f, data / f);
  }
  std::ofstream(data / "train-images-idx3-ubyte.gz") << "not a gzip file";
  StartDaemon(4);
  const int64_t id = SubmitOk(TinyJobYaml("corrupt-mpi", absl::StrCat(kMpi, "data: ", data.string(), "\n")));
  const proto::Job job = WaitUntilEnded(id);
  EXPECT_EQ(job.state(), proto::JOB_FAILED);
  EXPECT_THAT(job.reason(), HasSubstr("every learner failed; learner-0: exit code"));
  ASSERT_EQ(job.processes_size(), 3);
  for (const proto::JobProcess& p : job.processes()) {
    EXPECT_FALSE(p.exit().empty()) << p.role() << ": its exit is recorded";
  }
}

TEST_F(SchedulerMpiTest, KubernetesJobsAreRefusedAtSubmitWithWhatToDoInstead) {
  StartDaemon(4);
  proto::Job job;
  grpc::Status st = Submit(TinyJobYaml("k8s", "backend: kubernetes\n"), 0, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("render-k8s"));
  EXPECT_TRUE(List().empty());
}

}  // namespace
}  // namespace orrery::scheduler::testing
