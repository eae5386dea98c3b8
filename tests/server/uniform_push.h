// A valid push of a uniform gradient, for the server tests and the fuzz targets (no gtest here:
// fuzz/ includes it too).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "parameter_server.pb.h"
#include "server/sharding.h"
#include "server/tensor_codec.h"

namespace orrery::server::testing {

// A valid push to shard `shard` of `plan` by `learner` of its gradient for `step`, every element
// `g`, computed on version `base` (8 samples, loss 1).
inline proto::PushRequest UniformPush(const ShardPlan& plan, uint32_t shard, const std::string& job,
                                      const std::string& token, int learner, int64_t step, float g,
                                      uint64_t base) {
  proto::PushRequest r;
  r.set_job_id(job);
  r.set_token(token);
  r.set_learner_id(learner);
  r.set_step(step);
  r.set_samples(8);
  r.set_loss(1.0f);
  for (int i : plan.ChunksOfShard(shard)) {
    const Chunk& c = plan.chunks()[i];
    auto* pc = r.add_chunks();
    pc->mutable_id()->set_tensor(plan.TensorName(c.tensor));
    pc->mutable_id()->set_index(c.index);
    pc->set_base_version(base);
    std::vector<float> v(c.length, g);
    if (!EncodeFloats(v, proto::FP32, pc->mutable_gradient()).ok()) abort();  // FP32 cannot fail
  }
  return r;
}

}  // namespace orrery::server::testing
