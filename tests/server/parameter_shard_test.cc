#include "server/parameter_shard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/server/shard_test_util.h"

namespace orrery::server {
namespace {

using testing::FakeLearners;
using testing::SmallConfig;

TEST(HardsyncTest, NeverAppliesFewerThanLambdaGradients) {
  FakeLearners f(SmallConfig("hardsync", 3));
  for (int i = 0; i < 3; ++i) f.Register(i);
  f.Init(1.0f);
  const int orders[3][3] = {{0, 1, 2}, {2, 0, 1}, {1, 2, 0}};
  float expected = 1.0f;
  for (int step = 0; step < 3; ++step) {
    std::vector<std::shared_ptr<testing::PullSlot>> next;
    for (int i = 0; i < 3; ++i) {
      const int l = orders[step][i];
      auto pulled = f.Pull(l, step);
      ASSERT_TRUE(pulled->done);
      ASSERT_EQ(pulled->result->version(), static_cast<uint64_t>(step));
      ASSERT_TRUE(f.Push(l, step, static_cast<float>(l + 1), step).ok());
      if (i < 2) {
        EXPECT_EQ(f.version(), static_cast<uint64_t>(step)) << "applied before all 3 pushed";
        next.push_back(f.Pull(l, step + 1));
        EXPECT_FALSE(next.back()->done) << "pull for the next step must wait for the update";
      }
    }
    EXPECT_EQ(f.version(), static_cast<uint64_t>(step + 1));
    for (auto& p : next) {
      ASSERT_TRUE(p->done);
      EXPECT_EQ(p->result->version(), static_cast<uint64_t>(step + 1));
    }
    expected -= 0.5f * (1 + 2 + 3) / 3.0f;
    EXPECT_FLOAT_EQ(f.weight(), expected);
  }
  EXPECT_EQ(f.shard().DebugState().gradients_applied, 9u);
  EXPECT_EQ(f.shard().DebugState().staleness.max(), 0u);
}

TEST(HardsyncTest, NewLearnerJoinsAtTheCurrentStepAndIsWaitedFor) {
  FakeLearners f(SmallConfig("hardsync", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  ASSERT_TRUE(f.Push(1, 0, 1.0f, 0).ok());
  ASSERT_EQ(f.version(), 1u);
  proto::RegisterRequest r;
  r.set_job_id("job");
  r.set_token("secret");
  r.set_learner_id(-1);
  *r.mutable_layout() = f.plan().layout();
  auto joined = f.shard().Register(r);
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ(joined->learner_id(), 2);
  EXPECT_EQ(joined->clock(), 1);
  ASSERT_TRUE(f.Push(0, 1, 1.0f, 1).ok());
  ASSERT_TRUE(f.Push(1, 1, 1.0f, 1).ok());
  EXPECT_EQ(f.version(), 1u) << "the new learner's gradient is still missing";
  ASSERT_TRUE(f.Push(2, 1, 1.0f, 1).ok());
  EXPECT_EQ(f.version(), 2u);
}

TEST(RegisterTest, AnOversizedLayoutIsRefusedAndLeavesTheShardWithoutOne) {
  FakeLearners f(SmallConfig("async", 1));
  proto::RegisterRequest r;
  r.set_job_id("job");
  r.set_token("secret");
  r.set_learner_id(0);
  *r.mutable_layout() = testing::MakeLayout({{"w", uint64_t{1} << 40}}, 4, 1);
  auto refused = f.shard().Register(r);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.Register(0), 0) << "a good layout is still taken afterwards";
}

TEST(SoftsyncTest, AppliesInGroupsOfExactlyC) {
  // λ = 6, n = 2: c = 3.
  FakeLearners f(SmallConfig("softsync:2", 6));
  for (int i = 0; i < 6; ++i) f.Register(i);
  f.Init(0.0f);
  std::vector<int64_t> step(6, 0);
  const int order[] = {0, 3, 5, 1, 1, 2, 4, 0, 5};
  float expected = 0.0f;
  float group_sum = 0.0f;
  for (int i = 0; i < 9; ++i) {
    const int l = order[i];
    const float g = static_cast<float>(i + 1);
    ASSERT_TRUE(f.Push(l, step[l]++, g, f.version()).ok());
    group_sum += g;
    EXPECT_EQ(f.version(), static_cast<uint64_t>((i + 1) / 3)) << "after push " << i + 1;
    if ((i + 1) % 3 == 0) {
      expected -= 0.5f * group_sum / 3.0f;
      group_sum = 0.0f;
      EXPECT_FLOAT_EQ(f.weight(), expected);
    }
  }
}

TEST(SoftsyncTest, PullsNeverWait) {
  FakeLearners f(SmallConfig("softsync:1", 4));
  for (int i = 0; i < 4; ++i) f.Register(i);
  f.Init(0.0f);
  EXPECT_TRUE(f.Pull(0, 50)->done);
}

TEST(AsyncTest, AppliesEveryGradientOnArrival) {
  FakeLearners f(SmallConfig("async", 4));
  for (int i = 0; i < 4; ++i) f.Register(i);
  f.Init(0.0f);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(f.Push(i % 4, i / 4, 1.0f, f.version()).ok());
    EXPECT_EQ(f.version(), static_cast<uint64_t>(i + 1));
  }
}

// A gradient's age runs from the shard's answer to its learner's pull (not the asking: a parked
// pull's age starts when it is released) to the gradient's arrival; a push without a pull since
// the last one has no age.
TEST(GradientAgeTest, RunsFromThePullsAnswerToTheGradientsArrival) {
  FakeLearners f(SmallConfig("hardsync", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  auto stats = [&f] {
    proto::StatsRequest r;
    r.set_job_id("job");
    r.set_token("secret");
    absl::StatusOr<proto::StatsResponse> s = f.shard().Stats(r);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : proto::StatsResponse();
  };
  ASSERT_TRUE(f.Pull(0, 0)->done);          // t = 0
  f.clock().Advance(absl::Seconds(2));
  ASSERT_TRUE(f.Pull(1, 0)->done);          // t = 2
  f.clock().Advance(absl::Seconds(1));
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());  // t = 3: age 3
  auto parked = f.Pull(0, 1);               // waits for learner 1's gradient of step 0
  EXPECT_FALSE(parked->done);
  f.clock().Advance(absl::Milliseconds(500));
  ASSERT_TRUE(f.Push(1, 0, 1.0f, 0).ok());  // t = 3.5: age 1.5; the update releases the pull
  ASSERT_TRUE(parked->done);
  EXPECT_EQ(stats().gradient_age_count(), 2u);
  EXPECT_DOUBLE_EQ(stats().gradient_age_sum(), 4.5);
  EXPECT_DOUBLE_EQ(stats().gradient_age_max(), 3.0);
  f.clock().Advance(absl::Seconds(4));
  ASSERT_TRUE(f.Push(0, 1, 1.0f, 1).ok());  // t = 7.5: 4 s after its parked pull's answer
  ASSERT_TRUE(f.Push(1, 1, 1.0f, 1).ok());  // no pull since its last gradient: no age
  const proto::StatsResponse s = stats();
  EXPECT_EQ(s.gradient_age_count(), 3u);
  EXPECT_DOUBLE_EQ(s.gradient_age_sum(), 8.5);
  EXPECT_DOUBLE_EQ(s.gradient_age_max(), 4.0);
  EXPECT_EQ(f.version(), 2u);
}

TEST(SspTest, BlocksExactlyWhenAheadOfTheSlowestByMoreThanS) {
  FakeLearners f(SmallConfig("ssp:2", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Pull(1, 0)->done);
  // Learner 0 races ahead while learner 1 stays at clock 0.
  for (int c = 0; c <= 2; ++c) {
    auto p = f.Pull(0, c);
    EXPECT_TRUE(p->done) << "clock " << c << " - 0 <= 2 must not block";
    ASSERT_TRUE(f.Push(0, c, 1.0f, p->result->version()).ok());
  }
  auto blocked = f.Pull(0, 3);
  EXPECT_FALSE(blocked->done) << "clock 3 - 0 > 2 must block";
  EXPECT_EQ(f.shard().parked_pulls(), 1);
  ASSERT_TRUE(f.Push(1, 0, 1.0f, 0).ok());  // the slowest reaches clock 1
  EXPECT_TRUE(blocked->done) << "3 - 1 <= 2 must release";
  EXPECT_TRUE(blocked->result.ok());
  EXPECT_FALSE(f.Pull(0, 4)->done);
  auto slow = f.Pull(1, 2);  // the slowest announces clock 2 by pulling
  EXPECT_TRUE(slow->done);
  EXPECT_EQ(f.shard().parked_pulls(), 0);
}

TEST(SspTest, ZeroBoundIsBulkSynchronous) {
  FakeLearners f(SmallConfig("ssp:0", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  auto p = f.Pull(0, 1);
  EXPECT_FALSE(p->done);
  ASSERT_TRUE(f.Push(1, 0, 1.0f, 0).ok());
  EXPECT_TRUE(p->done);
}

TEST(InverseRuleTest, ScalesEachGradientByItsOwnStaleness) {
  ShardConfig config = SmallConfig("async", 3);
  config.staleness_rule = "inverse";
  config.lr = 0.8f;
  FakeLearners f(config);
  for (int i = 0; i < 3; ++i) f.Register(i);
  f.Init(10.0f);
  // All three computed on version 0; they land at versions 0, 1, 2.
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());  // τ = 0: 0.8
  EXPECT_FLOAT_EQ(f.weight(), 10.0f - 0.8f);
  ASSERT_TRUE(f.Push(1, 0, 1.0f, 0).ok());  // τ = 1: 0.8
  EXPECT_FLOAT_EQ(f.weight(), 10.0f - 1.6f);
  ASSERT_TRUE(f.Push(2, 0, 1.0f, 0).ok());  // τ = 2: 0.4
  EXPECT_FLOAT_EQ(f.weight(), 10.0f - 2.0f);
  ASSERT_TRUE(f.Push(0, 1, 2.0f, 1).ok());  // τ = 3 - 1 = 2: 0.4 · 2
  EXPECT_FLOAT_EQ(f.weight(), 10.0f - 2.8f);
  ShardState s = f.shard().DebugState();
  EXPECT_EQ(s.staleness.count(), 4u);
  EXPECT_EQ(s.staleness.max(), 2u);
  EXPECT_DOUBLE_EQ(s.staleness.mean(), (0 + 1 + 2 + 2) / 4.0);
  EXPECT_EQ(s.staleness.histogram()[2], 2u);
}

TEST(InverseRuleTest, AppliesPerGradientInsideASoftsyncGroup) {
  ShardConfig config = SmallConfig("softsync:1", 2);  // c = 2
  config.staleness_rule = "inverse";
  config.lr = 1.0f;
  FakeLearners f(config);
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  ASSERT_TRUE(f.Push(1, 0, 1.0f, 0).ok());  // version 1
  ASSERT_TRUE(f.Push(0, 1, 1.0f, 1).ok());  // τ 0
  ASSERT_TRUE(f.Push(1, 1, 4.0f, 0).ok());  // τ 1 (base 0, version 1): rate 1
  EXPECT_FLOAT_EQ(f.weight(), -1.0f - (1.0f + 4.0f) / 2);
}

TEST(LrDecayTest, RatesDropByTheFactorAtEachDecayPointOfSamplesApplied) {
  ShardConfig config = SmallConfig("async", 1);  // α₀ = 0.5; each push carries 8 samples
  config.lr_decay_at_samples = {16, 24};
  config.lr_decay_factor = 0.5f;
  FakeLearners f(config);
  f.Register(0);
  f.Init(0.0f);
  float expected = 0.0f;
  for (int step = 0; step < 4; ++step) {
    ASSERT_TRUE(f.Pull(0, step)->done);
    ASSERT_TRUE(f.Push(0, step, 1.0f, step).ok());
    // Before the push: 8·step samples applied, so the rate is 0.5 until 16, then 0.25, then 0.125.
    const float rate = step < 2 ? 0.5f : step < 3 ? 0.25f : 0.125f;
    expected -= rate;
    EXPECT_FLOAT_EQ(f.weight(), expected) << step;
  }
}

TEST(LrDecayTest, BadDecayScheduleIsRefused) {
  for (auto [at, factor] : {std::pair<std::vector<uint64_t>, float>{{16, 16}, 0.5f},
                            {{0}, 0.5f},
                            {{16}, 0.0f},
                            {{16}, 1.5f}}) {
    ShardConfig config = SmallConfig("async", 1);
    config.lr_decay_at_samples = at;
    config.lr_decay_factor = factor;
    ManualClock clock;
    EXPECT_EQ(ParameterShard::Create(config, &clock).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(MomentumTest, ServerSideMomentumAccumulatesVelocity) {
  ShardConfig config = SmallConfig("async", 1);
  config.momentum = 0.5f;
  config.lr = 1.0f;
  FakeLearners f(config);
  f.Register(0);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());  // v = 1, w = -1
  ASSERT_TRUE(f.Push(0, 1, 1.0f, 1).ok());  // v = 1.5, w = -2.5
  EXPECT_FLOAT_EQ(f.weight(), -2.5f);
}

TEST(TimeoutTest, DropsASilentLearnerAndUnblocksHardsync) {
  FakeLearners f(SmallConfig("hardsync", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 2.0f, 0).ok());
  auto waiting = f.Pull(0, 1);
  EXPECT_FALSE(waiting->done);
  f.clock().Advance(absl::Seconds(9));
  EXPECT_EQ(f.shard().ExpireSilentLearners(), 0);
  EXPECT_FALSE(waiting->done);
  f.clock().Advance(absl::Seconds(2));
  EXPECT_EQ(f.shard().ExpireSilentLearners(), 1) << "learner 1 silent for 11 s > 10 s";
  ASSERT_TRUE(waiting->done) << "learner 0 waits in a pull, so it is alive and released";
  EXPECT_EQ(waiting->result->version(), 1u);
  EXPECT_FLOAT_EQ(f.weight(), -1.0f);
  EXPECT_EQ(f.Push(1, 0, 1.0f, 0).status().code(), absl::StatusCode::kNotFound);
  // It can come back: it rejoins at the current step.
  EXPECT_EQ(f.Register(1), 1);
  ASSERT_TRUE(f.Push(1, 1, 1.0f, 1).ok());
}

TEST(TimeoutTest, DropsASilentLearnerAndUnblocksSsp) {
  FakeLearners f(SmallConfig("ssp:1", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  ASSERT_TRUE(f.Push(0, 1, 1.0f, 1).ok());
  auto waiting = f.Pull(0, 2);
  EXPECT_FALSE(waiting->done);
  f.clock().Advance(absl::Seconds(11));
  EXPECT_EQ(f.shard().ExpireSilentLearners(), 1);
  EXPECT_TRUE(waiting->done);
}

TEST(PullTest, WaitsForInitialWeightsAndSecondInitIsIgnored) {
  FakeLearners f(SmallConfig("async", 1));
  f.Register(0);
  auto p = f.Pull(0, 0);
  EXPECT_FALSE(p->done);
  f.Init(3.0f);
  ASSERT_TRUE(p->done);
  ASSERT_TRUE(p->result.ok());
  std::vector<float> w(4);
  ASSERT_TRUE(DecodeFloats(p->result->chunks(0).weights(), w).ok());
  EXPECT_FLOAT_EQ(w[0], 3.0f);
  proto::InitRequest again;
  again.set_job_id("job");
  again.set_token("secret");
  auto r = f.shard().Init(again);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->accepted());
  EXPECT_FLOAT_EQ(f.weight(), 3.0f);
}

TEST(PullTest, CancelAnswersAParkedPullOnceWithCancelled) {
  FakeLearners f(SmallConfig("hardsync", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  auto p = f.Pull(0, 1);
  ASSERT_FALSE(p->done);
  f.shard().CancelPull(p->ticket);
  ASSERT_TRUE(p->done);
  EXPECT_EQ(p->result.status().code(), absl::StatusCode::kCancelled);
  f.shard().CancelPull(p->ticket);  // no second answer
}

TEST(PullTest, ShutdownAnswersParkedPullsWithUnavailable) {
  FakeLearners f(SmallConfig("hardsync", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  auto p = f.Pull(0, 1);
  f.shard().Shutdown();
  ASSERT_TRUE(p->done);
  EXPECT_EQ(p->result.status().code(), absl::StatusCode::kUnavailable);
}

// The chunk ids of an answer, as "tensor/index".
std::vector<std::string> ChunkIds(const proto::PullResponse& r) {
  std::vector<std::string> ids;
  for (const proto::PullChunk& c : r.chunks()) {
    ids.push_back(absl::StrCat(c.id().tensor(), "/", c.id().index()));
  }
  return ids;
}

TEST(PullTest, PartsSplitTheWholeAnswerInOrderAndCountOnePull) {
  FakeLearners f(SmallConfig("async", 1));
  f.Register(0);
  f.Init(2.0f);
  auto whole = f.Pull(0, 0);
  ASSERT_TRUE(whole->done && whole->result.ok());
  const std::vector<std::string> all = ChunkIds(*whole->result);
  ASSERT_EQ(all.size(), 4u);  // w/0 w/1 w/2 b/0
  for (uint32_t parts = 1; parts <= all.size(); ++parts) {
    std::vector<std::string> joined;
    for (uint32_t part = 0; part < parts; ++part) {
      auto p = f.Pull(0, 0, part, parts);
      ASSERT_TRUE(p->done && p->result.ok()) << p->result.status();
      const std::vector<std::string> ids = ChunkIds(*p->result);
      // Part p holds chunks [p*N/P, (p+1)*N/P): the split the client computes.
      EXPECT_EQ(ids.size(), all.size() * (part + 1) / parts - all.size() * part / parts);
      joined.insert(joined.end(), ids.begin(), ids.end());
      for (const proto::PullChunk& c : p->result->chunks()) {
        EXPECT_EQ(c.version(), 0u);
        EXPECT_EQ(c.weights().encoding(), proto::FP32);
      }
    }
    EXPECT_EQ(joined, all) << parts << " parts";
  }
  proto::StatsRequest stats_request;
  stats_request.set_job_id("job");
  stats_request.set_token("secret");
  auto stats = f.shard().Stats(stats_request);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pulls(), 1u + 4u);  // the whole pull, then one per split (counted at part 0)
}

TEST(PullTest, PartsAreGatedByTheProtocolLikeAWholePull) {
  FakeLearners f(SmallConfig("hardsync", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Pull(0, 0, 0, 2)->done);
  ASSERT_TRUE(f.Pull(0, 0, 1, 2)->done);
  ASSERT_TRUE(f.Pull(1, 0)->done);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  auto first = f.Pull(0, 1, 0, 2);
  auto second = f.Pull(0, 1, 1, 2);
  EXPECT_FALSE(first->done);  // step 0 waits for learner 1's gradient
  EXPECT_FALSE(second->done);
  ASSERT_TRUE(f.Push(1, 0, 1.0f, 0).ok());
  ASSERT_TRUE(first->done && first->result.ok());
  ASSERT_TRUE(second->done && second->result.ok());
  EXPECT_EQ(first->result->chunks(0).version(), 1u);
  EXPECT_EQ(second->result->chunks(0).version(), 1u);
}

TEST(PullTest, BadPartsAreRefusedAndChangeNothing) {
  FakeLearners f(SmallConfig("ssp:0", 2));
  f.Register(0);
  f.Register(1);
  f.Init(1.0f);
  proto::StatsRequest stats_request;
  stats_request.set_job_id("job");
  stats_request.set_token("secret");
  const auto before = f.shard().Stats(stats_request);
  ASSERT_TRUE(before.ok());
  for (auto [part, parts] : {std::pair<uint32_t, uint32_t>{2, 2}, {0, 5}, {7, 0}}) {
    // Clock 3 would raise learner 0's clock (and block it) if the pull were taken.
    auto p = f.Pull(0, 3, part, parts);
    ASSERT_TRUE(p->done);
    EXPECT_EQ(p->result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(p->result.status().message()), ::testing::HasSubstr("part"));
  }
  const auto after = f.shard().Stats(stats_request);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->pulls(), before->pulls());
  // Learner 0's clock was not raised to 3: under ssp:0, learner 1's pull at clock 1 still waits
  // for it.
  EXPECT_FALSE(f.Pull(1, 1)->done);
}

TEST(RegisterTest, FirstRegisterDefinesTheLayoutAndLaterOnesMustMatch) {
  FakeLearners f(SmallConfig("async", 2));
  f.Register(0);
  proto::RegisterRequest r;
  r.set_job_id("job");
  r.set_token("secret");
  r.set_learner_id(1);
  *r.mutable_layout() = f.plan().layout();
  r.mutable_layout()->mutable_tensors(1)->set_element_count(4);
  auto st = f.shard().Register(r).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("layout mismatch"), std::string::npos) << st;
  EXPECT_FALSE(f.shard().DebugState().learners.contains(1));
}

TEST(RegisterTest, RetriedPushIsAnsweredAlreadyExistsAndNotCounted) {
  FakeLearners f(SmallConfig("async", 1));
  f.Register(0);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  EXPECT_EQ(f.Push(0, 0, 1.0f, 0).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(f.version(), 1u);
}

}  // namespace
}  // namespace orrery::server

namespace orrery::server {
namespace {

TEST(LeaveTest, LeavingLearnerNoLongerHoldsUpHardsync) {
  testing::FakeLearners f(testing::SmallConfig("hardsync", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  auto waiting = f.Pull(0, 1);
  ASSERT_FALSE(waiting->done);
  proto::LeaveRequest leave;
  leave.set_job_id("job");
  leave.set_token("secret");
  leave.set_learner_id(1);
  ASSERT_TRUE(f.shard().Leave(leave).ok());
  EXPECT_TRUE(waiting->done);
  EXPECT_EQ(f.version(), 1u);
}

TEST(ObserverTest, ObserverPullsNeverWaitOnTheProtocol) {
  testing::FakeLearners f(testing::SmallConfig("hardsync", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  auto observed = f.Pull(-2, 7);
  ASSERT_TRUE(observed->done);
  EXPECT_TRUE(observed->result.ok());
  EXPECT_EQ(f.shard().DebugState().learners.size(), 2u) << "observers are not members";
}

}  // namespace
}  // namespace orrery::server
