// The scheduler daemon's job life cycle and admission rule, as pure logic.
#include "scheduler/job_state.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/job_queue.h"

namespace orrery::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr JobState kAll[] = {JobState::kQueued, JobState::kRunning, JobState::kSucceeded,
                             JobState::kFailed, JobState::kCancelled, JobState::kLost};

TEST(JobStateTest, NamesRoundTrip) {
  for (JobState s : kAll) EXPECT_EQ(ParseJobState(JobStateName(s)), s) << JobStateName(s);
  EXPECT_EQ(ParseJobState("finished"), std::nullopt);
}

TEST(JobStateTest, OnlyQueuedAndRunningAreLive) {
  EXPECT_FALSE(IsTerminal(JobState::kQueued));
  EXPECT_FALSE(IsTerminal(JobState::kRunning));
  for (JobState s : {JobState::kSucceeded, JobState::kFailed, JobState::kCancelled, JobState::kLost}) {
    EXPECT_TRUE(IsTerminal(s)) << JobStateName(s);
  }
}

TEST(JobStateTest, QueuedJobStartsIsCancelledOrFailsButNeverSucceedsDirectly) {
  EXPECT_TRUE(CheckTransition(JobState::kQueued, JobState::kRunning).ok());
  EXPECT_TRUE(CheckTransition(JobState::kQueued, JobState::kCancelled).ok());
  EXPECT_TRUE(CheckTransition(JobState::kQueued, JobState::kFailed).ok());
  EXPECT_FALSE(CheckTransition(JobState::kQueued, JobState::kSucceeded).ok());
  EXPECT_FALSE(CheckTransition(JobState::kQueued, JobState::kLost).ok());
}

TEST(JobStateTest, RunningJobEndsInAnyTerminalState) {
  for (JobState s : {JobState::kSucceeded, JobState::kFailed, JobState::kCancelled, JobState::kLost}) {
    EXPECT_TRUE(CheckTransition(JobState::kRunning, s).ok()) << JobStateName(s);
  }
  EXPECT_FALSE(CheckTransition(JobState::kRunning, JobState::kQueued).ok());
}

TEST(JobStateTest, TerminalStatesNeverChangeAndTheErrorNamesBoth) {
  for (JobState from : {JobState::kSucceeded, JobState::kFailed, JobState::kCancelled, JobState::kLost}) {
    for (JobState to : kAll) {
      absl::Status st = CheckTransition(from, to);
      EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << JobStateName(from) << "->" << JobStateName(to);
      EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr(JobStateName(from)));
      EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr(JobStateName(to)));
    }
  }
}

TEST(JobQueueTest, AdmitsInSubmissionOrderWhileSlotsLast) {
  JobQueue q(4);
  q.Push(1, 0, {2});
  q.Push(2, 0, {2});
  q.Push(3, 0, {2});
  EXPECT_THAT(q.Admit(), ElementsAre(1, 2));
  EXPECT_EQ(q.used_slots(), 4);
  EXPECT_EQ(q.Position(3), 1);
  EXPECT_THAT(q.Admit(), IsEmpty()) << "no slot is free";
  q.Release(1);
  EXPECT_THAT(q.Admit(), ElementsAre(3));
  EXPECT_EQ(q.size(), 0u);
}

TEST(JobQueueTest, HigherPriorityGoesFirstAndEqualPrioritiesStayFifo) {
  JobQueue q(1);
  q.Push(1, 0, {1});
  q.Push(2, 5, {1});
  q.Push(3, 0, {1});
  q.Push(4, 5, {1});
  EXPECT_EQ(q.Position(2), 1);
  EXPECT_EQ(q.Position(4), 2);
  EXPECT_EQ(q.Position(1), 3);
  EXPECT_EQ(q.Position(3), 4);
  std::vector<int64_t> order;
  for (int i = 0; i < 4; ++i) {
    std::vector<int64_t> admitted = q.Admit();
    ASSERT_EQ(admitted.size(), 1u);
    order.push_back(admitted[0]);
    q.Release(admitted[0]);
  }
  EXPECT_THAT(order, ElementsAre(2, 4, 1, 3));
}

TEST(JobQueueTest, HeadOfLineWaitsAndSmallerJobsBehindItDoNotOvertake) {
  JobQueue q(4);
  q.Push(1, 0, {3});
  EXPECT_THAT(q.Admit(), ElementsAre(1));
  q.Push(2, 0, {3});  // needs 3, only 1 free
  q.Push(3, 0, {1});  // would fit, but must not starve job 2
  EXPECT_THAT(q.Admit(), IsEmpty());
  q.Release(1);
  EXPECT_THAT(q.Admit(), ElementsAre(2, 3));
}

TEST(JobQueueTest, RemovedJobsNeverStartAndHeldSlotsCount) {
  JobQueue q(2);
  q.Hold(7, {2});  // a re-attached job
  q.Push(8, 0, {1});
  q.Push(9, 0, {1});
  EXPECT_TRUE(q.Remove(8));
  EXPECT_FALSE(q.Remove(8));
  EXPECT_EQ(q.Position(8), 0);
  EXPECT_THAT(q.Admit(), IsEmpty());
  q.Release(7);
  q.Release(7);  // twice is harmless
  EXPECT_THAT(q.Admit(), ElementsAre(9));
  EXPECT_EQ(q.used_slots(), 1);
}

TEST(JobQueueTest, MemoryMakesTheHeadWaitEvenWithSlotsFree) {
  JobQueue q(8, 1000);
  q.Push(1, 0, {2, 600});
  q.Push(2, 0, {2, 600});  // slots are free, memory is not
  q.Push(3, 0, {1, 100});  // would fit, but waits behind job 2
  EXPECT_THAT(q.Admit(), ElementsAre(1));
  EXPECT_EQ(q.used_memory_bytes(), 600);
  EXPECT_THAT(q.Admit(), IsEmpty());
  EXPECT_EQ(q.Position(2), 1);
  q.Release(1);
  EXPECT_EQ(q.used_memory_bytes(), 0);
  EXPECT_THAT(q.Admit(), ElementsAre(2, 3));
  EXPECT_EQ(q.used_memory_bytes(), 700);
  EXPECT_EQ(q.used_slots(), 3);
}

TEST(JobQueueTest, MemoryExactlyFullFitsAndHeldMemoryCounts) {
  JobQueue q(8, 1000);
  q.Hold(7, {1, 400});  // a re-attached job
  q.Push(8, 0, {1, 600});
  q.Push(9, 0, {1, 1});
  EXPECT_THAT(q.Admit(), ElementsAre(8)) << "400 + 600 is exactly the total";
  q.Release(7);
  EXPECT_THAT(q.Admit(), ElementsAre(9));
  EXPECT_EQ(q.used_memory_bytes(), 601);
}

TEST(JobQueueTest, WithoutAMemoryTotalMemoryIsNotCounted) {
  JobQueue q(2);
  EXPECT_EQ(q.total_memory_bytes(), 0);
  q.Push(1, 0, {1, int64_t{1} << 50});
  q.Push(2, 0, {1, int64_t{1} << 50});
  EXPECT_THAT(q.Admit(), ElementsAre(1, 2));
}

TEST(JobQueueTest, WaitingForSaysWhatTheHeadLacksAndWhoIsAheadOfTheRest) {
  JobQueue q(4, int64_t{1000} << 20);
  q.Push(1, 0, {3, int64_t{600} << 20});
  EXPECT_THAT(q.Admit(), ElementsAre(1));
  q.Push(2, 0, {2, int64_t{600} << 20});
  q.Push(3, 0, {1, 0});
  EXPECT_EQ(q.WaitingFor(2), "waiting for 2 slots (1 of 4 free) and 600 MiB of memory (400 of 1000 MiB free)");
  EXPECT_EQ(q.WaitingFor(3), "waiting behind 1 queued job(s)");
  EXPECT_EQ(q.WaitingFor(1), "") << "running, not queued";
  q.Release(1);
  EXPECT_EQ(q.WaitingFor(2), "starting") << "it fits; the next Admit starts it";
}

}  // namespace
}  // namespace orrery::scheduler
