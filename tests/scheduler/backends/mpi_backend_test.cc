// MpiBackend with plain shell commands as ranks under a real mpirun: the command line it builds,
// output routed to each rank, exit codes (announced or mpirun's), and stops that leave nothing.
#include "scheduler/backends/mpi_backend.h"

#include <signal.h>

#include "absl/strings/str_cat.h"
#include "backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/backends/job_ranks.h"

namespace orrery::scheduler {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kDeadline = absl::Seconds(60);

ProcessSpec Rank(const std::string& role, const std::string& script) {
  ProcessSpec spec;
  spec.role = role;
  spec.argv = {"/bin/sh", "-c", script};
  return spec;
}

class MpiBackendTest : public ::testing::Test {
 protected:
  MpiBackendTest() : backend_(loop_) { recorder_.Attach(backend_); }
  bool RunUntilAllExited() {
    return loop_.RunUntil([this] { return backend_.AllExited(); }, kDeadline);
  }
  EventLoop loop_;
  MpiBackend backend_;
  testing::Recorder recorder_;
};

TEST_F(MpiBackendTest, OneAppContextWhenRanksAgreeOneEachWhenTheyDiffer) {
  ProcessSpec a = Rank("a", "echo a");
  a.env["ORRERY_TOKEN"] = "t";
  ProcessSpec b = a;
  b.role = "b";
  absl::StatusOr<std::vector<std::string>> same = backend_.MpirunArgv({a, b});
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_THAT(*same, IsSupersetOf({"--tag-output", "--oversubscribe", "-x", "ORRERY_TOKEN", "-np", "2"}));
  EXPECT_EQ(same->back(), "echo a");
  b.argv = {"/bin/echo", "b"};
  absl::StatusOr<std::vector<std::string>> mpmd = backend_.MpirunArgv({a, b});
  ASSERT_TRUE(mpmd.ok());
  EXPECT_THAT(*mpmd, Contains(":"));
  EXPECT_EQ(mpmd->back(), "b");
  b.env["OTHER"] = "x";
  EXPECT_EQ(backend_.MpirunArgv({a, b}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(MpiBackendTest, EachRanksLinesReachItsOwnProcess) {
  const std::string script = "echo out-$OMPI_COMM_WORLD_RANK; echo err-$OMPI_COMM_WORLD_RANK >&2";
  absl::StatusOr<std::vector<ProcessId>> ids =
      backend_.StartGroup({Rank("r0", script), Rank("r1", script), Rank("r2", script)});
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(RunUntilAllExited()) << recorder_.Dump();
  for (int r = 0; r < 3; ++r) {
    const std::string role = absl::StrCat("r", r);
    EXPECT_THAT(recorder_.lines[role], UnorderedElementsAre(absl::StrCat("out-", r), absl::StrCat("err-", r))) << recorder_.Dump();  // streams are not ordered
    EXPECT_TRUE(recorder_.exits[role].status.ok());
    EXPECT_FALSE(recorder_.exits[role].stop_requested);
  }
  EXPECT_THAT(backend_.Tail((*ids)[1], 50), Contains("out| out-1"));
}

TEST_F(MpiBackendTest, AnnouncedExitCodesWinOverMpirunsStatus) {
  // mpirun ends the whole launch once a rank exits non-zero, so rank 1 fails only after ranks 0
  // and 2 have announced and exited (each leaves its pid in DIR; rank 1 waits, with a deadline,
  // until both pids are gone). Without that wait, a loaded machine may start rank 2 after rank 1
  // has failed, and mpirun kills it before it announces anything.
  const std::string dir = testing::FreshDir("mpi_exit");
  const std::string script = absl::StrCat(
      "d=", dir, "; r=$OMPI_COMM_WORLD_RANK; "
      "if [ $r != 1 ]; then echo 'ORRERY_RANK_EXIT {\"code\":0}'; echo $$ > $d/p$r.tmp; mv $d/p$r.tmp $d/p$r; exit 0; fi; "
      "i=0; while [ $i -lt 1200 ]; do i=$((i+1)); "
      "if [ -s $d/p0 ] && [ -s $d/p2 ] && ! kill -0 $(cat $d/p0) 2>/dev/null && ! kill -0 $(cat $d/p2) 2>/dev/null; "
      "then break; fi; sleep 0.05; done; "
      "echo 'ORRERY_RANK_EXIT {\"code\":3}'; exit 3");
  ASSERT_TRUE(backend_.StartGroup({Rank("r0", script), Rank("r1", script), Rank("r2", script)}).ok());
  ASSERT_TRUE(RunUntilAllExited()) << recorder_.Dump();
  EXPECT_TRUE(recorder_.exits["r0"].status.ok());
  EXPECT_EQ(recorder_.exits["r1"].status.exit_code, 3);
  EXPECT_TRUE(recorder_.exits["r2"].status.ok());
}

TEST_F(MpiBackendTest, RanksThatAnnounceNothingGetMpirunsStatus) {
  ASSERT_TRUE(backend_.StartGroup({Rank("r0", "exit 0"), Rank("r1", "exit 4")}).ok());
  ASSERT_TRUE(RunUntilAllExited()) << recorder_.Dump();
  EXPECT_FALSE(recorder_.exits["r0"].status.ok());
  EXPECT_FALSE(recorder_.exits["r1"].status.ok());
  absl::StatusOr<ProcessInfo> info = backend_.Info(*backend_.Find("r1"));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, ProcessState::kExited);
}

TEST_F(MpiBackendTest, StopAllEndsEveryRankEvenOnesIgnoringSigterm) {
  // Each rank announces its pid (mpirun makes it a process group leader), then sleeps in a child;
  // rank 1 ignores SIGTERM, so only the forced kill after the grace period ends it.
  const std::string announce = "echo \"ORRERY_RANK {\\\"pid\\\":$$,\\\"host\\\":\\\"$(hostname)\\\"}\"; ";
  absl::StatusOr<std::vector<ProcessId>> ids =
      backend_.StartGroup({Rank("r0", announce + "sleep 120"), Rank("r1", announce + "trap '' TERM; sleep 120")});
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(loop_.RunUntil([this] { return recorder_.Saw("r0", "ORRERY_RANK") && recorder_.Saw("r1", "ORRERY_RANK"); },
                             kDeadline))
      << recorder_.Dump();
  std::vector<int> groups;
  for (ProcessId id : *ids) groups.push_back(backend_.Info(id)->pid);
  bool stopped = false;
  const absl::Time t0 = absl::Now();
  backend_.StopAll(absl::Seconds(2), [&stopped] { stopped = true; });
  ASSERT_TRUE(loop_.RunUntil([&stopped] { return stopped; }, kDeadline)) << recorder_.Dump();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(30));
  EXPECT_TRUE(recorder_.exits["r0"].stop_requested);
  EXPECT_TRUE(recorder_.exits["r1"].stop_requested);
  for (int group : groups) {
    ASSERT_GT(group, 0);
    EXPECT_TRUE(testing::PollUntil(loop_, [group] { return ::kill(-group, 0) != 0; }, absl::Seconds(10)))
        << "process group " << group << " outlived the stop";
  }
  EXPECT_EQ(backend_.StartGroup({Rank("late", "true")}).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(MpiBackendTest, StopReachesOneRankThroughItsAnnouncedPid) {
  const std::string script =
      "echo \"ORRERY_RANK {\\\"pid\\\":$$,\\\"host\\\":\\\"$(hostname)\\\"}\"; exec sleep 120";
  absl::StatusOr<std::vector<ProcessId>> ids = backend_.StartGroup({Rank("r0", script), Rank("r1", script)});
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(loop_.RunUntil([this] { return recorder_.Saw("r0", "ORRERY_RANK") && recorder_.Saw("r1", "ORRERY_RANK"); },
                             kDeadline))
      << recorder_.Dump();
  absl::StatusOr<ProcessInfo> r1 = backend_.Info((*ids)[1]);
  ASSERT_TRUE(r1.ok());
  EXPECT_GT(r1->pid, 0);
  ASSERT_TRUE(backend_.Stop((*ids)[1], absl::Seconds(5)).ok());
  // Under mpirun a rank that dies ends the launch: both ranks exit, only r1 by request.
  ASSERT_TRUE(RunUntilAllExited()) << recorder_.Dump();
  EXPECT_TRUE(recorder_.exits["r1"].stop_requested);
  EXPECT_FALSE(recorder_.exits["r0"].stop_requested);
  EXPECT_FALSE(recorder_.exits["r0"].status.ok());
}

TEST_F(MpiBackendTest, DuplicateRolesAndEmptyCommandsAreRefused) {
  EXPECT_EQ(backend_.StartGroup({Rank("x", "true"), Rank("x", "true")}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ProcessSpec empty;
  empty.role = "e";
  EXPECT_EQ(backend_.Start(empty).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(backend_.AllExited());
}

TEST(MpiJobProcessesTest, RanksAreShardsThenLearnersThenTheEvaluator) {
  JobSpec job;
  job.name = "j";
  job.servers = 2;
  job.learners = 3;
  MpiJobOptions o;
  o.binary = "/opt/orrery";
  o.job_file = "/shared/j.yaml";
  o.token = "tok";
  o.role_prefix = "job7:";
  std::vector<ProcessSpec> specs = MpiJobProcesses(job, o);
  std::vector<std::string> roles;
  for (const ProcessSpec& s : specs) {
    roles.push_back(s.role);
    EXPECT_THAT(s.argv, ElementsAre("/opt/orrery", "mpi-rank", "/shared/j.yaml"));
    EXPECT_EQ(s.env.at("ORRERY_TOKEN"), "tok");
  }
  EXPECT_THAT(roles, ElementsAre("job7:server-0", "job7:server-1", "job7:learner-0", "job7:learner-1",
                                 "job7:learner-2", "job7:evaluator"));
  EXPECT_EQ(RoleOfRank(job, 3).kind, RankKind::kLearner);
  EXPECT_EQ(RoleOfRank(job, 3).index, 1);
}

}  // namespace
}  // namespace orrery::scheduler
