// Every kind of bad push is refused with a clear status and leaves the shard's state identical.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include <gtest/gtest.h>

#include "server/parameter_shard.h"
#include "tests/server/shard_test_util.h"

namespace orrery::server {
namespace {

using testing::FakeLearners;
using testing::SmallConfig;

struct BadPush {
  std::string name;
  absl::StatusCode code;
  std::function<void(const ShardPlan&, proto::PushRequest*)> mutate;
  bool nonfinite = false;
};

void SetFloat(proto::PushChunk* c, int i, float v) {
  std::memcpy(c->mutable_gradient()->mutable_data()->data() + 4 * i, &v, 4);
}

std::vector<BadPush> BadPushes() {
  using C = absl::StatusCode;
  return {
      {"missing chunk", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) { r->mutable_chunks()->RemoveLast(); }},
      {"extra chunk", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) { *r->add_chunks() = r->chunks(0); }},
      {"duplicate chunk", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         *r->mutable_chunks(r->chunks_size() - 1) = r->chunks(0);
       }},
      {"short payload", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         r->mutable_chunks(0)->mutable_gradient()->mutable_data()->resize(4);
       }},
      {"wrong element count", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         auto* g = r->mutable_chunks(0)->mutable_gradient();
         g->set_element_count(g->element_count() + 1);
         g->mutable_data()->append(4, '\0');
       }},
      {"unknown tensor", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         r->mutable_chunks(0)->mutable_id()->set_tensor("fc9.weight");
       }},
      {"unknown chunk index", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         r->mutable_chunks(0)->mutable_id()->set_index(99);
       }},
      {"chunk of another shard", C::kInvalidArgument,
       [](const ShardPlan& plan, proto::PushRequest* r) {
         const Chunk& other = plan.chunks()[plan.ChunksOfShard(1).front()];
         r->mutable_chunks(0)->mutable_id()->set_tensor(plan.TensorName(other.tensor));
         r->mutable_chunks(0)->mutable_id()->set_index(other.index);
       }},
      {"base version from the future", C::kFailedPrecondition,
       [](const ShardPlan&, proto::PushRequest* r) {
         for (auto& c : *r->mutable_chunks()) c.set_base_version(c.base_version() + 5);
       }},
      {"mixed base versions", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) { r->mutable_chunks(0)->set_base_version(0); }},
      {"NaN", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         SetFloat(r->mutable_chunks(1), 0, std::numeric_limits<float>::quiet_NaN());
       },
       true},
      {"Inf", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         SetFloat(r->mutable_chunks(0), 1, -std::numeric_limits<float>::infinity());
       },
       true},
      {"unspecified encoding", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         r->mutable_chunks(0)->mutable_gradient()->set_encoding(proto::ENCODING_UNSPECIFIED);
       }},
      {"FIXED16 tag on FP32-sized bytes", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         r->mutable_chunks(0)->mutable_gradient()->set_encoding(proto::FIXED16);
       }},
      {"FIXED16 with FL out of range", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         auto* g = r->mutable_chunks(0)->mutable_gradient();
         g->set_encoding(proto::FIXED16);
         g->mutable_data()->resize(2 * g->element_count());
         g->set_fractional_bits(31);
       }},
      {"unknown encoding", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) {
         r->mutable_chunks(0)->mutable_gradient()->set_encoding(static_cast<proto::Encoding>(7));
       }},
      {"unknown learner", C::kNotFound,
       [](const ShardPlan&, proto::PushRequest* r) { r->set_learner_id(7); }},
      {"observer pushing", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) { r->set_learner_id(-2); }},
      {"negative step", C::kInvalidArgument,
       [](const ShardPlan&, proto::PushRequest* r) { r->set_step(-3); }},
      {"another job's id", C::kPermissionDenied,
       [](const ShardPlan&, proto::PushRequest* r) { r->set_job_id("other-job"); }},
      {"wrong token", C::kUnauthenticated,
       [](const ShardPlan&, proto::PushRequest* r) { r->set_token("guess"); }},
      {"missing token", C::kUnauthenticated,
       [](const ShardPlan&, proto::PushRequest* r) { r->clear_token(); }},
  };
}

TEST(PushValidationTest, EachBadPushIsRejectedAndLeavesStateIdentical) {
  // Two shards, so "a chunk of another shard" exists; softsync with c = 2 and one gradient
  // pending, so the accumulator is not empty while the bad pushes arrive.
  ShardConfig config = SmallConfig("softsync:1", 2, /*shards=*/2);
  config.momentum = 0.9f;
  FakeLearners f(config);
  ASSERT_GE(f.plan().ChunksOfShard(0).size(), 2u);
  ASSERT_FALSE(f.plan().ChunksOfShard(1).empty());
  f.Register(0);
  f.Register(1);
  f.Init(1.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  ASSERT_TRUE(f.Push(1, 0, 2.0f, 0).ok());
  ASSERT_EQ(f.version(), 1u);
  ASSERT_TRUE(f.Push(0, 1, 3.0f, 1).ok());  // pending

  uint64_t rejected = 0, nonfinite = 0;
  for (const BadPush& bad : BadPushes()) {
    SCOPED_TRACE(bad.name);
    proto::PushRequest request = f.MakePush(1, 1, 0.25f, 1);
    bad.mutate(f.plan(), &request);
    const ShardState before = f.shard().DebugState();
    absl::StatusOr<proto::PushResponse> result = f.shard().Push(request);
    EXPECT_EQ(result.status().code(), bad.code) << result.status();
    EXPECT_FALSE(result.status().message().empty());
    EXPECT_TRUE(f.shard().DebugState() == before) << "state changed";
    if (bad.code != absl::StatusCode::kUnauthenticated &&
        bad.code != absl::StatusCode::kPermissionDenied) {
      ++rejected;
    }
    if (bad.nonfinite) ++nonfinite;
  }
  proto::StatsRequest sr;
  sr.set_job_id("job");
  sr.set_token("secret");
  auto stats = f.shard().Stats(sr);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->gradients_rejected(), rejected);
  EXPECT_EQ(stats->gradients_rejected_nonfinite(), nonfinite);

  // The good push still goes through afterwards and completes the pending group.
  ASSERT_TRUE(f.Push(1, 1, 1.0f, 1).ok());
  EXPECT_EQ(f.version(), 2u);
}

TEST(PushValidationTest, HardsyncStepOutsideTheCollectedStepIsRefusedWithoutChange) {
  FakeLearners f(SmallConfig("hardsync", 2));
  f.Register(0);
  f.Register(1);
  f.Init(0.0f);
  ASSERT_TRUE(f.Push(0, 0, 1.0f, 0).ok());
  const ShardState before = f.shard().DebugState();
  EXPECT_EQ(f.Push(1, 1, 1.0f, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(f.Push(0, 0, 1.0f, 0).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(f.shard().DebugState() == before);
}

TEST(PushValidationTest, PushBeforeInitialWeightsIsAFailedPrecondition) {
  FakeLearners f(SmallConfig("async", 1));
  f.Register(0);
  EXPECT_EQ(f.Push(0, 0, 1.0f, 0).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace orrery::server
