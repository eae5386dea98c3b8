// FileRendezvous with threads standing in for ranks: all-gathers, barriers, aborts, timeouts.
#include "scheduler/backends/file_rendezvous.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace orrery::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::FreshDir;

constexpr absl::Duration kPoll = absl::Milliseconds(5);

std::unique_ptr<FileRendezvous> Make(const std::string& dir, int rank, int size) {
  absl::StatusOr<std::unique_ptr<FileRendezvous>> rv = FileRendezvous::Create(dir, rank, size, kPoll);
  EXPECT_TRUE(rv.ok()) << rv.status();
  return *std::move(rv);
}

TEST(FileRendezvousTest, AllGatherReturnsEveryRanksValueInRankOrder) {
  const std::string dir = FreshDir("rdv");
  std::vector<std::vector<std::string>> seen(3);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.emplace_back([&, r] {
      auto rv = Make(dir, r, 3);
      absl::StatusOr<std::vector<std::string>> first = rv->AllGather(absl::StrCat("host-", r), absl::Seconds(10));
      ASSERT_TRUE(first.ok()) << first.status();
      absl::StatusOr<std::vector<std::string>> second = rv->AllGather(r == 0 ? "ep:1" : "", absl::Seconds(10));
      ASSERT_TRUE(second.ok()) << second.status();
      seen[r] = *first;
      seen[r].insert(seen[r].end(), second->begin(), second->end());
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 3; ++r) EXPECT_THAT(seen[r], ElementsAre("host-0", "host-1", "host-2", "ep:1", "", ""));
}

TEST(FileRendezvousTest, BarrierCompletesOnlyWhenEveryRankArrived) {
  const std::string dir = FreshDir("rdv");
  auto a = Make(dir, 0, 2);
  auto b = Make(dir, 1, 2);
  ASSERT_TRUE(a->Arrive(1).ok());
  EXPECT_FALSE(*a->Test(1));
  ASSERT_TRUE(b->Arrive(1).ok());
  EXPECT_TRUE(*a->Test(1));
  EXPECT_TRUE(*b->Test(1));
  EXPECT_FALSE(*a->Test(2));  // phases are independent
}

TEST(FileRendezvousTest, AbortReachesEveryRankWithTheFirstReason) {
  const std::string dir = FreshDir("rdv");
  auto a = Make(dir, 0, 2);
  auto b = Make(dir, 1, 2);
  ASSERT_TRUE(a->Arrive(1).ok());
  b->Abort(1, "server-0: cannot bind");
  a->Abort(1, "a later reason");
  absl::StatusOr<bool> test = a->Test(1);
  ASSERT_FALSE(test.ok());
  EXPECT_EQ(test.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(test.status().message()), HasSubstr("rank 1: server-0: cannot bind"));
  absl::StatusOr<std::vector<std::string>> gathered = a->AllGather("x", absl::Seconds(10));
  EXPECT_EQ(gathered.status().code(), absl::StatusCode::kAborted);
}

TEST(FileRendezvousTest, AllGatherTimesOutNamingTheMissingRanks) {
  const std::string dir = FreshDir("rdv");
  auto a = Make(dir, 0, 3);
  absl::StatusOr<std::vector<std::string>> gathered = a->AllGather("x", absl::Milliseconds(50));
  ASSERT_EQ(gathered.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(gathered.status().message()), HasSubstr("rank(s) 1, 2 did not arrive"));
}

TEST(FileRendezvousTest, RankOutsideTheJobIsRefused) {
  EXPECT_EQ(FileRendezvous::Create(FreshDir("rdv"), 3, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FileRendezvous::Create(FreshDir("rdv"), -1, 3).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace orrery::scheduler
