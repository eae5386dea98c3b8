#include "server/sync_protocol.h"

#include <cstdint>
#include <limits>

#include <gtest/gtest.h>

namespace orrery::server {
namespace {

SyncProtocol Make(const std::string& text, int learners) {
  auto spec = ParseProtocol(text, learners);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return SyncProtocol(*spec, learners);
}

TEST(ParseProtocolTest, SoftsyncGroupSizeIsMaxOneFloorLambdaOverN) {
  EXPECT_EQ(Make("softsync:1", 16).GradientsPerUpdate(), 16);
  EXPECT_EQ(Make("softsync:2", 16).GradientsPerUpdate(), 8);
  EXPECT_EQ(Make("softsync:3", 16).GradientsPerUpdate(), 5);
  EXPECT_EQ(Make("softsync:16", 16).GradientsPerUpdate(), 1);
  EXPECT_EQ(Make("softsync:8", 4).GradientsPerUpdate(), 1);
  EXPECT_EQ(Make("async", 16).GradientsPerUpdate(), 1);
  EXPECT_EQ(Make("ssp:3", 16).GradientsPerUpdate(), 1);
}

TEST(ParseProtocolTest, RejectsUnknownAndMalformedProtocols) {
  for (const char* bad : {"", "sync", "softsync:", "softsync:0", "softsync:x", "ssp:-1", "ssp"}) {
    EXPECT_EQ(ParseProtocol(bad, 4).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ParseProtocol("async", 0).ok());
  EXPECT_EQ(ParseProtocol("ssp:0", 4)->staleness_bound, 0);
}

TEST(SyncProtocolTest, HardsyncIsDueOnlyWhenEveryActiveLearnerPushed) {
  SyncProtocol p = Make("hardsync", 3);
  const absl::Time t0 = absl::UnixEpoch();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(p.Join(i, t0).ok());
  ASSERT_TRUE(p.CheckPush(0, 0).ok());
  p.RecordPush(0, 0);
  p.RecordPush(1, 0);
  EXPECT_FALSE(p.UpdateDue());
  EXPECT_FALSE(p.PullReady(1));
  p.RecordPush(2, 0);
  EXPECT_TRUE(p.UpdateDue());
  p.OnUpdateApplied();
  EXPECT_TRUE(p.PullReady(1));
  EXPECT_EQ(p.hardsync_step(), 1);
  EXPECT_EQ(p.CheckPush(0, 0).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(p.CheckPush(0, 2).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SyncProtocolTest, StepsAndClocksBeyondTheMaximumAreRefusedSoClockPlusOneCannotOverflow) {
  for (const char* protocol : {"async", "ssp:1", "hardsync"}) {
    SCOPED_TRACE(protocol);
    SyncProtocol p = Make(protocol, 1);
    ASSERT_TRUE(p.Join(0, absl::UnixEpoch()).ok());
    const SyncProtocol before = p;
    for (int64_t bad : {int64_t{-1}, SyncProtocol::kMaxClock, std::numeric_limits<int64_t>::max()}) {
      EXPECT_EQ(p.CheckPush(0, bad).code(), absl::StatusCode::kInvalidArgument) << bad;
    }
    EXPECT_EQ(p.CheckPull(0, SyncProtocol::kMaxClock + 1).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(p.CheckPull(0, std::numeric_limits<int64_t>::max()).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(p.CheckPull(0, SyncProtocol::kMaxClock).ok());
    EXPECT_TRUE(p == before);
  }
  {
    // Ids given out (-1) stay below the maximum, so every snapshot a shard writes loads again.
    SyncProtocol q = Make("async", 1);
    ASSERT_TRUE(q.Join(SyncProtocol::kMaxLearnerId - 1, absl::UnixEpoch()).ok());
    EXPECT_EQ(q.Join(-1, absl::UnixEpoch()).status().code(), absl::StatusCode::kResourceExhausted);
    SyncProtocol r = Make("async", 1);
    EXPECT_TRUE(r.Load(q.Save(), absl::UnixEpoch()).ok());
  }
  SyncProtocol p = Make("hardsync", 1);
  SyncProtocol::Snapshot s;
  s.step = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(p.Load(s, absl::UnixEpoch()).code(), absl::StatusCode::kInvalidArgument);
  s.step = 0;
  s.learners[0] = SyncProtocol::Learner{true, std::numeric_limits<int64_t>::max(), -1, absl::Time()};
  s.next_id = 1;
  s.ever_joined = 1;
  EXPECT_EQ(p.Load(s, absl::UnixEpoch()).code(), absl::StatusCode::kInvalidArgument);
  s.learners[0].clock = SyncProtocol::kMaxClock;
  EXPECT_TRUE(p.Load(s, absl::UnixEpoch()).ok());
}

TEST(SyncProtocolTest, HardsyncWaitsForLambdaLearnersToJoinBeforeTheFirstUpdate) {
  SyncProtocol p = Make("hardsync", 2);
  const absl::Time t0 = absl::UnixEpoch();
  ASSERT_TRUE(p.Join(0, t0).ok());
  p.RecordPush(0, 0);
  EXPECT_FALSE(p.UpdateDue());  // learner 1 has not joined yet
  ASSERT_TRUE(p.Join(1, t0).ok());
  EXPECT_FALSE(p.UpdateDue());
  p.RecordPush(1, 0);
  EXPECT_TRUE(p.UpdateDue());
}

TEST(SyncProtocolTest, JoinAssignsFreshIdsAndIsIdempotent) {
  SyncProtocol p = Make("async", 2);
  const absl::Time t0 = absl::UnixEpoch();
  EXPECT_EQ(p.Join(-1, t0)->learner_id, 0);
  EXPECT_EQ(p.Join(5, t0)->learner_id, 5);
  EXPECT_EQ(p.Join(-1, t0)->learner_id, 6);
  EXPECT_EQ(p.Join(5, t0)->learner_id, 5);
  EXPECT_EQ(p.active_learners(), 3);
  EXPECT_EQ(p.Join(-3, t0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SyncProtocolTest, SspJoinStartsAtTheSlowestClock) {
  SyncProtocol p = Make("ssp:1", 2);
  const absl::Time t0 = absl::UnixEpoch();
  ASSERT_TRUE(p.Join(0, t0).ok());
  ASSERT_TRUE(p.Join(1, t0).ok());
  p.RecordPull(0, 4);
  p.RecordPull(1, 3);
  EXPECT_EQ(p.Join(2, t0)->clock, 3);
  EXPECT_TRUE(p.PullReady(4));
  EXPECT_FALSE(p.PullReady(5));
}

TEST(SyncProtocolTest, ExpireDropsOnlySilentLearnersAndStartsAfterTimeout) {
  SyncProtocol p = Make("ssp:0", 3);
  const absl::Time t0 = absl::UnixEpoch();
  ASSERT_TRUE(p.Join(0, t0).ok());
  ASSERT_TRUE(p.Join(1, t0).ok());
  EXPECT_FALSE(p.started());
  p.Touch(0, t0 + absl::Seconds(8));
  auto dropped = p.ExpireSilent(t0 + absl::Seconds(11), absl::Seconds(10));
  EXPECT_EQ(dropped, std::vector<int>{1});
  EXPECT_TRUE(p.started());  // the third learner never came; the job starts after the timeout
  EXPECT_FALSE(p.IsActive(1));
  EXPECT_EQ(p.CheckPush(1, 0).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace orrery::server
