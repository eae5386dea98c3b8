#include "base/cpu_affinity.h"

#include <sched.h>

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

namespace orrery {
namespace {

TEST(CpuListTest, ParsesNumbersAndRangesIntoAscendingDistinctCpus) {
  EXPECT_EQ(ParseCpuList("3").value(), std::vector<int>({3}));
  EXPECT_EQ(ParseCpuList("4-6,0,2,5").value(), std::vector<int>({0, 2, 4, 5, 6}));
  EXPECT_EQ(ParseCpuList("1-1").value(), std::vector<int>({1}));
}

TEST(CpuListTest, RejectsMalformedListsNamingTheItem) {
  for (const char* text : {"", ",", "a", "1,", "-1", "1-", "+1", " 1", "1-2-3", "0x1"}) {
    absl::StatusOr<std::vector<int>> cpus = ParseCpuList(text);
    EXPECT_TRUE(absl::IsInvalidArgument(cpus.status())) << text;
  }
  EXPECT_NE(ParseCpuList("0,5-2").status().message().find("'5-2' is a range that runs backwards"),
            std::string::npos);
  EXPECT_NE(ParseCpuList("99999").status().message().find("past"), std::string::npos);
}

TEST(CpuListTest, FormatsRunsAsRanges) {
  EXPECT_EQ(FormatCpuList({0, 1, 2, 3, 6, 8, 9}), "0-3,6,8-9");
  EXPECT_EQ(FormatCpuList({5}), "5");
  EXPECT_EQ(FormatCpuList({}), "");
}

// In a child process (so that this test binary keeps every core): binds to `cpu` and exits 0
// when a thread that existed before the binding and one started after it both run on `cpu` only,
// and SetProcessAffinity then gives every thread back all of `all`.
void BindAndCheckThenExit(int cpu, const std::vector<int>& all) {
  std::atomic<bool> bound{false};
  bool early_ok = false;
  std::thread early([&] {
    while (!bound.load()) std::this_thread::yield();
    early_ok = AllowedCpus().value() == std::vector<int>({cpu});
  });
  if (!BindProcessToCpus({cpu}).ok()) std::_Exit(2);
  bound = true;
  early.join();
  if (!early_ok) std::_Exit(3);
  std::vector<int> later;
  std::thread([&] { later = AllowedCpus().value(); }).join();
  if (later != std::vector<int>({cpu})) std::_Exit(4);
  if (AllowedCpuCount() != 1) std::_Exit(7);
  if (all.size() > 1 && BindProcessToCpus(all).ok()) std::_Exit(5);  // outside the narrowed mask
  if (!SetProcessAffinity(all).ok() || AllowedCpus().value() != all) std::_Exit(6);
  if (AllowedCpuCount() != static_cast<int>(all.size())) std::_Exit(8);
  std::_Exit(0);
}

TEST(BindProcessToCpusTest, BindsExistingAndLaterThreadsAndRefusesCpusOutsideTheMask) {
  const std::vector<int> allowed = AllowedCpus().value();
  ASSERT_FALSE(allowed.empty());
  EXPECT_EXIT(BindAndCheckThenExit(allowed.back(), allowed), ::testing::ExitedWithCode(0), "");
  const absl::Status outside = BindProcessToCpus({CPU_SETSIZE - 1});
  EXPECT_TRUE(absl::IsFailedPrecondition(outside)) << outside;
  EXPECT_NE(outside.message().find("is not available to this process (it may use " + FormatCpuList(allowed)),
            std::string::npos)
      << outside;
  EXPECT_EQ(AllowedCpus().value(), allowed);  // a refused binding changes nothing
}

}  // namespace
}  // namespace orrery
