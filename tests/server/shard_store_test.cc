#include "server/shard_store.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "server/tensor_codec.h"
#include "tests/server/layout_util.h"
#include "tests/server/pull_util.h"

namespace orrery::server {
namespace {

ShardPlan Plan() { return *ShardPlan::Create(testing::MakeLayout({{"w", 1000}, {"b", 37}}, 128, 1)); }

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

// A shard of over 512 K weights (2 MB) updates on two threads when it may use two cores
// (shard_store.cc; asked for here, whatever this machine has); every element must get the same
// update as one thread would give it, on both update paths, with and without momentum.
TEST(ShardStoreTest, LargeShardsUpdateEveryElementOnTwoThreads) {
  const ShardPlan plan =
      *ShardPlan::Create(testing::MakeLayout({{"big", (uint64_t{1} << 19) + 12345}}, 65536, 1));
  const size_t n = plan.total_elements();
  const std::vector<float> w0 = Random(n, 1.0f, 1), g1 = Random(n, 0.1f, 2), g2 = Random(n, 0.1f, 3);
  const proto::PushRequest p1 = Gradient(plan, g1), p2 = Gradient(plan, g2);
  for (float mu : {0.0f, 0.9f}) {
    ShardStore store(&plan, 0, mu, std::nullopt, /*two_cores=*/true);
    ASSERT_TRUE(store.InitializeFromFlat(w0).ok());
    // One gradient (applied straight from the payload), then two averaged (the accumulator).
    store.Accumulate(*store.CheckChunks(p1.chunks()), 0.5f);
    store.ApplyAccumulated(1);
    store.Accumulate(*store.CheckChunks(p1.chunks()), 0.25f);
    store.Accumulate(*store.CheckChunks(p2.chunks()), 0.125f);
    store.FlushDeferred();
    store.ApplyAccumulated(2);
    std::vector<size_t> sample = {n / 2 - 1, n / 2, n - 1};  // both halves' edges
    for (size_t i = 0; i < n; i += 997) sample.push_back(i);
    for (size_t i : sample) {
      float v = 0.5f * g1[i];
      float w = w0[i] - v;
      const float u = (0.25f * g1[i] + 0.125f * g2[i]) * 0.5f;
      v = mu != 0.0f ? mu * v + u : u;
      w -= v;
      ASSERT_FLOAT_EQ(store.weights()[i], w) << "momentum " << mu << ", element " << i;
      if (mu != 0.0f) {
        ASSERT_FLOAT_EQ(store.velocity()[i], v) << i;
      }
      ASSERT_EQ(store.accumulator()[i], 0.0f) << i;
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


// precision.weights: fixed16. An update of a quarter epsilon per step moves the stochastically
// rounded weights by that much in expectation; rounding to nearest loses every one of them.
TEST(ShardStoreTest, Fixed16WeightsKeepSubEpsilonUpdatesOnlyWithStochasticRounding) {
  const ShardPlan plan = *ShardPlan::Create(testing::MakeLayout({{"w", 40000}}, 4096, 1));
  constexpr int kFl = 12;
  const float eps = 1.0f / 4096;
  for (quant::Rounding rounding : {quant::Rounding::kStochastic, quant::Rounding::kNearest}) {
    SCOPED_TRACE(rounding == quant::Rounding::kStochastic ? "stochastic" : "nearest");
    ShardStore store(&plan, 0, 0.0f, FixedWeights{quant::FixedFormat{kFl}, rounding});
    ASSERT_TRUE(store.InitializeFromFlat(std::vector<float>(40000, 0.5f)).ok());
    const proto::PushRequest g = Gradient(plan, std::vector<float>(40000, eps / 4));
    for (int step = 0; step < 10; ++step) {
      auto payloads = store.CheckChunks(g.chunks());
      ASSERT_TRUE(payloads.ok()) << payloads.status();
      store.Accumulate(*payloads, 1.0f);
      store.ApplyAccumulated(1);
    }
    double mean = 0;
    for (float x : store.weights()) mean += x;
    mean /= 40000;
    if (rounding == quant::Rounding::kStochastic) {
      EXPECT_NEAR((0.5 - mean) / eps, 2.5, 0.05) << "10 updates of eps/4";
    } else {
      EXPECT_EQ(mean, 0.5) << "each update was below eps/2 and was lost";
    }
    // The float weights are the master words' values: every weight is on the grid.
    ASSERT_NE(store.fixed_weights(), nullptr);
    const auto words = store.fixed_weights()->words();
    ASSERT_EQ(words.size(), store.weights().size());
    for (size_t i = 0; i < words.size(); ++i) ASSERT_EQ(store.weights()[i], words[i] * eps) << i;
  }
}

TEST(ShardStoreTest, Fixed16WeightsAreSentExactlyInTheirOwnFl) {
  const ShardPlan plan = Plan();
  ShardStore store(&plan, 0, 0.9f, FixedWeights{quant::FixedFormat{10}});
  ASSERT_TRUE(store.InitializeFromFlat(Random(plan.total_elements(), 1.0f, 5)).ok());
  for (int step = 0; step < 3; ++step) {
    const proto::PushRequest g = Gradient(plan, Random(plan.total_elements(), 0.01f, 6 + step));
    auto payloads = store.CheckChunks(g.chunks());
    ASSERT_TRUE(payloads.ok());
    store.Accumulate(*payloads, 0.1f);
    store.ApplyAccumulated(1);
  }
  proto::PullResponse r;
  ASSERT_TRUE(testing::FillPull(store, proto::FIXED16, &r).ok());
  std::vector<float> pulled;
  for (const proto::PullChunk& c : r.chunks()) {
    EXPECT_EQ(c.weights().fractional_bits(), 10);
    std::vector<float> v(c.weights().element_count());
    ASSERT_TRUE(DecodeFloats(c.weights(), v).ok());
    pulled.insert(pulled.end(), v.begin(), v.end());
  }
  EXPECT_TRUE(BitwiseEqual(pulled, store.weights()));
}

// An FP32 pull answer points into the weights instead of copying them. An update while an answer
// holds them writes a new buffer (the answer keeps the pulled version's values); an update after
// the answer is gone writes in place. Either way the weights are those of the update.
TEST(ShardStoreTest, PullAnswersKeepTheirVersionWhileTheWeightsMoveOn) {
  const ShardPlan plan = Plan();
  for (float momentum : {0.0f, 0.9f}) {
    ShardStore store(&plan, 0, momentum), reference(&plan, 0, momentum);
    const std::vector<float> w0 = Random(plan.total_elements(), 1.0f, 1);
    ASSERT_TRUE(store.InitializeFromFlat(w0).ok());
    ASSERT_TRUE(reference.InitializeFromFlat(w0).ok());
    const proto::PushRequest g = Gradient(plan, Random(plan.total_elements(), 0.1f, 2));
    auto step = [&g](ShardStore& s, int count) {
      for (int i = 0; i < count; ++i) s.Accumulate(*s.CheckChunks(g.chunks()), 0.5f);
      s.ApplyAccumulated(count);
    };

    absl::StatusOr<PullAnswer> held = store.AnswerPull(proto::FP32);
    ASSERT_TRUE(held.ok()) << held.status();
    ASSERT_EQ(held->aliased.size(), static_cast<size_t>(held->response.chunks_size()));
    const proto::PullResponse before = held->Materialize();
    step(store, 1);  // straight from the payload
    step(reference, 1);
    EXPECT_EQ(store.weight_buffer_copies(), 1u);
    EXPECT_TRUE(BitwiseEqual(store.weights(), reference.weights()));
    EXPECT_EQ(held->Materialize().SerializeAsString(), before.SerializeAsString())
        << "the update changed an answer already given";
    EXPECT_TRUE(BitwiseEqual(*held->weights, w0));  // one shard, one tensor order: flat order

    held = store.AnswerPull(proto::FP32);
    step(store, 2);  // through the accumulator
    step(reference, 2);
    EXPECT_EQ(store.weight_buffer_copies(), 2u);
    held = absl::UnknownError("released");
    step(store, 2);
    step(reference, 2);
    EXPECT_EQ(store.weight_buffer_copies(), 2u) << "no answer held the weights";
    EXPECT_TRUE(BitwiseEqual(store.weights(), reference.weights()));

    // The answer of the current version is the store's weights.
    proto::PullResponse now;
    ASSERT_TRUE(testing::FillPull(store, proto::FP32, &now).ok());
    std::vector<float> pulled;
    for (const proto::PullChunk& c : now.chunks()) {
      EXPECT_EQ(c.version(), 3u);
      std::vector<float> v(c.weights().element_count());
      ASSERT_TRUE(DecodeFloats(c.weights(), v).ok());
      pulled.insert(pulled.end(), v.begin(), v.end());
    }
    EXPECT_TRUE(BitwiseEqual(pulled, store.weights()));
  }
}

}  // namespace
}  // namespace orrery::server
