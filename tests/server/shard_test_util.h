// Fake learners that drive a ParameterShard one event at a time (shared by the server tests).
#pragma once

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "server/clock.h"
#include "server/parameter_shard.h"
#include "server/sharding.h"
#include "server/tensor_codec.h"
#include "tests/server/layout_util.h"
#include "tests/server/uniform_push.h"

namespace orrery::server::testing {

inline proto::ModelLayout SmallLayout(uint32_t shards = 1) {
  return MakeLayout({{"w", 10}, {"b", 3}}, 4, shards);
}

inline ShardConfig SmallConfig(const std::string& protocol, int learners, uint32_t shards = 1) {
  ShardConfig c;
  c.shard_index = 0;
  c.num_shards = shards;
  c.job_id = "job";
  c.token = "secret";
  c.protocol = protocol;
  c.num_learners = learners;
  c.lr = 0.5f;
  c.learner_timeout = absl::Seconds(10);
  return c;
}

// A pull's answer as the PullResponse a learner receives.
inline absl::StatusOr<proto::PullResponse> Materialized(absl::StatusOr<PullAnswer> answer) {
  if (!answer.ok()) return answer.status();
  return answer->Materialize();
}

struct PullSlot {
  bool done = false;
  absl::StatusOr<proto::PullResponse> result = absl::UnknownError("not answered");
  ParameterShard::Ticket ticket = 0;
};

class FakeLearners {
 public:
  explicit FakeLearners(ShardConfig config) {
    auto shard = ParameterShard::Create(config, &clock_);
    EXPECT_TRUE(shard.ok()) << shard.status();
    shard_ = std::move(*shard);
    plan_ = std::make_unique<ShardPlan>(*ShardPlan::Create(SmallLayout(config.num_shards)));
  }

  ParameterShard& shard() { return *shard_; }
  ManualClock& clock() { return clock_; }
  const ShardPlan& plan() const { return *plan_; }

  int Register(int id) {
    proto::RegisterRequest r;
    r.set_job_id("job");
    r.set_token("secret");
    r.set_learner_id(id);
    *r.mutable_layout() = plan_->layout();
    auto resp = shard_->Register(r);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? resp->learner_id() : -100;
  }

  // Every weight starts at `value`.
  void Init(float value) {
    proto::InitRequest r;
    r.set_job_id("job");
    r.set_token("secret");
    for (int i : plan_->ChunksOfShard(0)) {
      const Chunk& c = plan_->chunks()[i];
      auto* ic = r.add_chunks();
      ic->mutable_id()->set_tensor(plan_->TensorName(c.tensor));
      ic->mutable_id()->set_index(c.index);
      std::vector<float> v(c.length, value);
      EXPECT_TRUE(EncodeFloats(v, proto::FP32, ic->mutable_weights()).ok());
    }
    auto resp = shard_->Init(r);
    EXPECT_TRUE(resp.ok() && resp->accepted());
  }

  // The whole pull, or part `part` of `parts` (PullRequest.part/parts) when parts is set.
  std::shared_ptr<PullSlot> Pull(int learner, int64_t clock, uint32_t part = 0,
                                 uint32_t parts = 0) {
    auto slot = std::make_shared<PullSlot>();
    proto::PullRequest r;
    r.set_job_id("job");
    r.set_token("secret");
    r.set_learner_id(learner);
    r.set_clock(clock);
    r.set_encoding(proto::FP32);
    r.set_part(part);
    r.set_parts(parts);
    slot->ticket = shard_->Pull(r, [slot](absl::StatusOr<PullAnswer> result) {
      EXPECT_FALSE(slot->done) << "PullDone ran twice";
      slot->done = true;
      slot->result = Materialized(std::move(result));
    });
    return slot;
  }

  // A valid push of a gradient whose every element is `g`, computed on `base`.
  proto::PushRequest MakePush(int learner, int64_t step, float g, uint64_t base) const {
    return UniformPush(*plan_, 0, "job", "secret", learner, step, g, base);
  }

  absl::StatusOr<proto::PushResponse> Push(int learner, int64_t step, float g, uint64_t base) {
    return shard_->Push(MakePush(learner, step, g, base));
  }

  uint64_t version() { return shard_->DebugState().version; }
  // The common value of every weight (fails the test if they differ).
  float weight() {
    ShardState s = shard_->DebugState();
    EXPECT_FALSE(s.weights.empty());
    for (float w : s.weights) EXPECT_FLOAT_EQ(w, s.weights[0]);
    return s.weights.empty() ? NAN : s.weights[0];
  }

 private:
  ManualClock clock_;
  std::unique_ptr<ParameterShard> shard_;
  std::unique_ptr<ShardPlan> plan_;
};

}  // namespace orrery::server::testing
