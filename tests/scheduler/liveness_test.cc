#include "scheduler/liveness.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace orrery::scheduler {
namespace {

TEST(LivenessTest, AGuardedCallbackRunsWithItsArgumentsWhileOpen) {
  Liveness liveness;
  std::vector<std::string> seen;
  auto fn = liveness.Guard([&seen](const std::string& text, int n) { seen.push_back(text + std::to_string(n)); });
  fn("a", 1);
  fn(std::string("b"), 2);
  EXPECT_EQ(seen, (std::vector<std::string>{"a1", "b2"}));
}

TEST(LivenessTest, AGuardedCallbackDoesNothingOnceClosed) {
  Liveness liveness;
  int calls = 0;
  std::function<void()> fn = liveness.Guard([&calls] { ++calls; });
  fn();
  liveness.Close();
  fn();
  EXPECT_EQ(calls, 1);
}

TEST(LivenessTest, AGuardedCallbackDoesNothingOnceItsOwnerIsGone) {
  auto liveness = std::make_unique<Liveness>();
  int calls = 0;
  std::function<void()> fn = liveness->Guard([&calls] { ++calls; });
  std::function<void()> copy = fn;
  liveness.reset();
  fn();
  copy();
  EXPECT_EQ(calls, 0);
}

TEST(LivenessTest, AGuardedCallbackMayOwnMoveOnlyState) {
  Liveness liveness;
  auto owned = std::make_unique<int>(7);
  int got = 0;
  auto fn = liveness.Guard([owned = std::move(owned), &got] { got = *owned; });
  fn();
  EXPECT_EQ(got, 7);
}

}  // namespace
}  // namespace orrery::scheduler
