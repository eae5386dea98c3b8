#include "server/shard_store.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "server/tensor_codec.h"

namespace orrery::server {
namespace {

ShardPlan Plan() {
  proto::ModelLayout layout;
  auto* w = layout.add_tensors();
  w->set_name("w");
  w->set_element_count(1000);
  auto* b = layout.add_tensors();
  b->set_name("b");
  b->set_element_count(37);
  layout.set_chunk_size(128);
  layout.set_num_shards(1);
  return *ShardPlan::Create(layout);
}

std::vector<float> Random(size_t n, float scale, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

proto::PushRequest Gradient(const ShardPlan& plan, const std::vector<float>& g) {
  proto::PushRequest r;
  for (int i : plan.ChunksOfShard(0)) {
    const Chunk& c = plan.chunks()[i];
    proto::PushChunk* pc = r.add_chunks();
    pc->mutable_id()->set_tensor(plan.TensorName(c.tensor));
    pc->mutable_id()->set_index(c.index);
    EXPECT_TRUE(EncodeFloats(std::span<const float>(g).subspan(c.offset, c.length), proto::FP32,
                             pc->mutable_gradient())
                    .ok());
  }
  return r;
}

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// An update of one gradient is applied straight from the payload (without the accumulator);
// the weights must be bit-for-bit those of accumulating first.
TEST(ShardStoreTest, OneGradientUpdateEqualsAccumulatingFirst) {
  const ShardPlan plan = Plan();
  for (float momentum : {0.0f, 0.9f}) {
    ShardStore fused(&plan, 0, momentum), reference(&plan, 0, momentum);
    const std::vector<float> w0 = Random(plan.total_elements(), 1.0f, 1);
    ASSERT_TRUE(fused.InitializeFromFlat(w0).ok());
    ASSERT_TRUE(reference.InitializeFromFlat(w0).ok());
    for (uint32_t step = 0; step < 4; ++step) {
      const proto::PushRequest g = Gradient(plan, Random(plan.total_elements(), 0.1f, 10 + step));
      auto payloads = fused.CheckChunks(g.chunks());
      ASSERT_TRUE(payloads.ok()) << payloads.status();
      const float rate = 0.05f / static_cast<float>(step + 1);
      fused.Accumulate(*payloads, rate);
      fused.ApplyAccumulated(1);
      reference.Accumulate(*payloads, rate);
      reference.FlushDeferred();
      reference.ApplyAccumulated(1);
      EXPECT_TRUE(BitwiseEqual(fused.weights(), reference.weights())) << "step " << step;
      EXPECT_TRUE(BitwiseEqual(fused.velocity(), reference.velocity())) << "step " << step;
      EXPECT_TRUE(BitwiseEqual(fused.accumulator(), reference.accumulator()));
      EXPECT_EQ(fused.version(), step + 1);
    }
  }
}

TEST(ShardStoreTest, SeveralGradientsAreAveraged) {
  const ShardPlan plan = Plan();
  ShardStore store(&plan, 0, 0.0f);
  ASSERT_TRUE(store.InitializeFromFlat(std::vector<float>(plan.total_elements(), 1.0f)).ok());
  const proto::PushRequest g1 = Gradient(plan, std::vector<float>(plan.total_elements(), 2.0f));
  const proto::PushRequest g2 = Gradient(plan, std::vector<float>(plan.total_elements(), 4.0f));
  store.Accumulate(*store.CheckChunks(g1.chunks()), 0.5f);
  store.Accumulate(*store.CheckChunks(g2.chunks()), 0.25f);
  store.FlushDeferred();
  EXPECT_EQ(store.accumulator()[0], 2.0f);  // 0.5·2 + 0.25·4
  store.ApplyAccumulated(2);
  EXPECT_EQ(store.weights()[0], 0.0f);  // 1 − 2/2
  EXPECT_EQ(store.weights()[plan.total_elements() - 1], 0.0f);
  EXPECT_EQ(store.accumulator()[0], 0.0f);
}

TEST(ShardStoreTest, RememberedGradientIsVisibleAfterFlush) {
  const ShardPlan plan = Plan();
  ShardStore store(&plan, 0, 0.0f);
  ASSERT_TRUE(store.InitializeFromFlat(std::vector<float>(plan.total_elements(), 0.0f)).ok());
  const proto::PushRequest g = Gradient(plan, std::vector<float>(plan.total_elements(), 3.0f));
  store.Accumulate(*store.CheckChunks(g.chunks()), 2.0f);
  store.FlushDeferred();
  store.FlushDeferred();  // idempotent
  EXPECT_EQ(store.accumulator()[5], 6.0f);
  EXPECT_EQ(store.version(), 0u);
}

}  // namespace
}  // namespace orrery::server
