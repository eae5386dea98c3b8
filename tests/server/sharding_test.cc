#include "server/sharding.h"

#include <algorithm>
#include <random>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/server/layout_util.h"

namespace orrery::server {
namespace {

using testing::MakeLayout;

TEST(Fnv1a64Test, MatchesPublishedValues) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST(ShardPlanTest, ChunksCoverTheFlatBufferInTensorOrder) {
  auto plan = ShardPlan::Create(MakeLayout({{"w", 10}, {"b", 3}, {"v", 8}}, 4, 3));
  ASSERT_TRUE(plan.ok()) << plan.status();
  const auto& chunks = plan->chunks();
  ASSERT_EQ(chunks.size(), 3u + 1u + 2u);
  uint64_t offset = 0;
  for (const Chunk& c : chunks) {
    EXPECT_EQ(c.offset, offset);
    offset += c.length;
    EXPECT_LT(c.shard, 3u);
  }
  EXPECT_EQ(offset, 21u);
  EXPECT_EQ(plan->total_elements(), 21u);
  EXPECT_EQ(chunks[2].length, 2u);  // w's last chunk is short
  EXPECT_EQ(chunks[3].length, 3u);  // b fits one chunk
  uint64_t owned = 0;
  for (uint32_t s = 0; s < 3; ++s) owned += plan->ShardElements(s);
  EXPECT_EQ(owned, 21u);
}

TEST(ShardPlanTest, OwnerIsHashOfTensorPlusChunkIndexModShards) {
  auto plan = ShardPlan::Create(MakeLayout({{"conv1.weight", 100}}, 10, 7));
  ASSERT_TRUE(plan.ok());
  const uint64_t h = Fnv1a64("conv1.weight");
  for (const Chunk& c : plan->chunks()) EXPECT_EQ(c.shard, (h + c.index) % 7);
}

TEST(ShardPlanTest, FindChunkNamesUnknownTensorsAndIndices) {
  auto plan = ShardPlan::Create(MakeLayout({{"w", 10}, {"b", 3}}, 4, 2));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(*plan->FindChunk("b", 0), 3);
  EXPECT_EQ(*plan->FindChunk("w", 2), 2);
  auto unknown = plan->FindChunk("nope", 0);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("nope"), std::string::npos);
  EXPECT_EQ(plan->FindChunk("w", 3).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ShardPlanTest, RejectsBrokenLayouts) {
  EXPECT_FALSE(ShardPlan::Create(MakeLayout({{"w", 10}, {"w", 3}}, 4, 2)).ok());
  EXPECT_FALSE(ShardPlan::Create(MakeLayout({{"w", 10}}, 0, 2)).ok());
  EXPECT_FALSE(ShardPlan::Create(MakeLayout({{"w", 10}}, 4, 0)).ok());
  EXPECT_FALSE(ShardPlan::Create(MakeLayout({}, 4, 2)).ok());
  proto::ModelLayout dims = MakeLayout({{"w", 10}}, 4, 2);
  dims.mutable_tensors(0)->add_dims(3);
  dims.mutable_tensors(0)->add_dims(3);
  EXPECT_FALSE(ShardPlan::Create(dims).ok());
}

// A layout comes from a peer's Register: one that would make the shard allocate past Orrery's
// model bound is refused before anything is cut or allocated.
TEST(ShardPlanTest, RefusesALayoutBeyondTheModelBoundsNamingThem) {
  auto huge = ShardPlan::Create(MakeLayout({{"w", 10}, {"giant", uint64_t{1} << 40}}, 1 << 20, 2));
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("more than 1073741824 parameters (at tensor 'giant'"), std::string::npos)
      << huge.status();
  // Two tensors each within the bound, over it together; and a wrapping sum.
  EXPECT_FALSE(ShardPlan::Create(MakeLayout({{"a", 1 << 29}, {"b", (1 << 29) + 1}}, 1 << 20, 2)).ok());
  EXPECT_FALSE(ShardPlan::Create(MakeLayout({{"a", 1 << 29}, {"b", ~uint64_t{0}}}, 1 << 20, 2)).ok());
  EXPECT_TRUE(ShardPlan::Create(MakeLayout({{"a", 1 << 29}, {"b", 1 << 29}}, 1 << 20, 2)).ok());
  auto tiny_chunks = ShardPlan::Create(MakeLayout({{"w", (1 << 24) + 1}}, 1, 2));
  ASSERT_FALSE(tiny_chunks.ok());
  EXPECT_NE(tiny_chunks.status().message().find("use a larger chunk size"), std::string::npos) << tiny_chunks.status();
}

TEST(CompareLayoutsTest, NamesTheFirstDifference) {
  auto a = MakeLayout({{"w", 10}, {"b", 3}}, 4, 2);
  EXPECT_TRUE(CompareLayouts(a, a).ok());
  auto b = MakeLayout({{"w", 10}, {"b", 4}}, 4, 2);
  absl::Status st = CompareLayouts(a, b);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'b'"), std::string::npos);
  EXPECT_FALSE(CompareLayouts(a, MakeLayout({{"w", 10}, {"b", 3}}, 8, 2)).ok());
  EXPECT_FALSE(CompareLayouts(a, MakeLayout({{"w", 10}, {"b", 3}}, 4, 3)).ok());
}

// Loads of the most and least loaded shard.
std::pair<uint64_t, uint64_t> MaxMin(const ShardPlan& plan) {
  uint64_t mx = 0, mn = UINT64_MAX;
  for (uint32_t s = 0; s < plan.num_shards(); ++s) {
    mx = std::max(mx, plan.ShardElements(s));
    mn = std::min(mn, plan.ShardElements(s));
  }
  return {mx, mn};
}

TEST(ShardPlanTest, LoadsStayBalancedForVeryDifferentModels) {
  std::vector<std::vector<std::pair<std::string, uint64_t>>> models;
  models.push_back({{"embedding", 4'000'000}});  // one huge tensor
  models.push_back({{"conv1.w", 800},   {"conv1.b", 32},    {"conv2.w", 18432}, {"conv2.b", 64},
                    {"fc1.w", 1605632}, {"fc1.b", 512},     {"fc2.w", 5120},    {"fc2.b", 10}});
  std::vector<std::pair<std::string, uint64_t>> many;  // many small tensors
  for (int i = 0; i < 500; ++i) many.push_back({absl::StrCat("layer", i, ".w"), 3000});
  models.push_back(many);
  std::mt19937_64 rng(7);
  std::vector<std::pair<std::string, uint64_t>> random;
  // absl::StrCat, not "t" + std::to_string(i): GCC 12 raises a -Wrestrict false positive on
  // the latter (PR 105329).
  for (int i = 0; i < 60; ++i) random.push_back({absl::StrCat("t", i), 1 + rng() % 300000});
  models.push_back(random);

  for (uint32_t shards : {2u, 3u, 4u, 8u}) {
    for (const auto& model : models) {
      const uint32_t chunk = 4096;
      auto plan = ShardPlan::Create(MakeLayout(model, chunk, shards));
      ASSERT_TRUE(plan.ok());
      auto [mx, mn] = MaxMin(*plan);
      // Provable: each tensor's chunks are dealt round-robin, so per tensor two shards differ by
      // at most one chunk.
      EXPECT_LE(mx - mn, model.size() * chunk);
      // Empirical: with at least 16 chunks per shard, no shard carries 10% more than its share.
      if (plan->chunks().size() >= 16 * shards) {
        const double mean = static_cast<double>(plan->total_elements()) / shards;
        EXPECT_LE(static_cast<double>(mx), 1.10 * mean)
            << "shards=" << shards << " tensors=" << model.size();
      }
    }
  }
}

}  // namespace
}  // namespace orrery::server
