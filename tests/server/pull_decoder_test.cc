#include "server/pull_decoder.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "server/shard_store.h"
#include "server/tensor_codec.h"

namespace orrery::server {
namespace {

using google::protobuf::io::ArrayInputStream;

// Two tensors (5 and 7 elements) in chunks of 3 over 2 shards.
ShardPlan TestPlan() {
  proto::ModelLayout layout;
  auto* a = layout.add_tensors();
  a->set_name("a");
  a->set_element_count(5);
  auto* b = layout.add_tensors();
  b->set_name("b");
  b->set_element_count(7);
  layout.set_chunk_size(3);
  layout.set_num_shards(2);
  return *ShardPlan::Create(layout);
}

std::vector<float> Flat(const ShardPlan& plan) {
  std::vector<float> flat(plan.total_elements());
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = 0.25f * static_cast<float>(i) - 1.0f;
  return flat;
}

// What shard `shard` answers, from the real ShardStore, at version 1.
proto::PullResponse Answer(const ShardPlan& plan, uint32_t shard) {
  ShardStore store(&plan, shard, 0.0f);
  EXPECT_TRUE(store.InitializeFromFlat(Flat(plan)).ok());
  store.ApplyAccumulated(1);  // zero update: same weights, version 1
  proto::PullResponse r;
  EXPECT_TRUE(store.FillPull(proto::FP32, &r).ok());
  return r;
}

absl::Status Decode(const std::string& bytes, const ShardPlan& plan, uint32_t shard,
                    std::vector<float>* weights, std::vector<uint64_t>* versions) {
  ArrayInputStream in(bytes.data(), static_cast<int>(bytes.size()));
  return DecodePullResponse(&in, plan, shard, *weights, *versions);
}

TEST(PullDecoderTest, PlacesEveryShardsChunksAndVersions) {
  const ShardPlan plan = TestPlan();
  std::vector<float> weights(plan.total_elements(), -9.0f);
  std::vector<uint64_t> versions(plan.chunks().size(), 0);
  for (uint32_t s = 0; s < 2; ++s) {
    ASSERT_TRUE(Decode(Answer(plan, s).SerializeAsString(), plan, s, &weights, &versions).ok());
  }
  EXPECT_EQ(weights, Flat(plan));
  EXPECT_EQ(versions, std::vector<uint64_t>(plan.chunks().size(), 1));
}

// Protobuf allows fields in any order and unknown fields; a payload before its chunk id is held
// and placed at the end of the chunk.
TEST(PullDecoderTest, AcceptsFieldsInAnyOrderAndUnknownFields) {
  const ShardPlan plan = TestPlan();
  const proto::PullResponse answer = Answer(plan, 0);
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out(&bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    for (const proto::PullChunk& c : answer.chunks()) {
      proto::PullChunk weights_only, version_only, id_only;
      *weights_only.mutable_weights() = c.weights();
      version_only.set_version(c.version());
      *id_only.mutable_id() = c.id();
      std::string chunk = weights_only.SerializeAsString() + version_only.SerializeAsString() +
                          id_only.SerializeAsString();
      chunk += std::string("\xf8\x06\x2a", 3);  // unknown field 111, varint 42
      coded.WriteTag(2 << 3 | 2);
      coded.WriteVarint32(static_cast<uint32_t>(chunk.size()));
      coded.WriteString(chunk);
    }
    coded.WriteTag(1 << 3);  // version = 1, after the chunks
    coded.WriteVarint64(1);
  }
  std::vector<float> weights(plan.total_elements(), -9.0f);
  std::vector<uint64_t> versions(plan.chunks().size(), 0);
  ASSERT_TRUE(Decode(bytes, plan, 0, &weights, &versions).ok());
  const std::vector<float> flat = Flat(plan);
  for (int i : plan.ChunksOfShard(0)) {
    const Chunk& c = plan.chunks()[i];
    for (uint32_t k = 0; k < c.length; ++k) EXPECT_EQ(weights[c.offset + k], flat[c.offset + k]);
    EXPECT_EQ(versions[i], 1u);
  }
}

TEST(PullDecoderTest, RejectsAnswersThatDoNotMatchThePlan) {
  const ShardPlan plan = TestPlan();
  std::vector<float> weights(plan.total_elements());
  std::vector<uint64_t> versions(plan.chunks().size());
  auto decode = [&](const proto::PullResponse& r) {
    return Decode(r.SerializeAsString(), plan, 0, &weights, &versions);
  };
  const proto::PullResponse good = Answer(plan, 0);
  ASSERT_GE(good.chunks_size(), 2);

  proto::PullResponse missing = good;
  missing.mutable_chunks()->RemoveLast();
  EXPECT_EQ(decode(missing).code(), absl::StatusCode::kInternal);

  proto::PullResponse twice = good;
  *twice.mutable_chunks(1) = good.chunks(0);
  EXPECT_EQ(decode(twice).code(), absl::StatusCode::kInternal);

  proto::PullResponse foreign = good;
  *foreign.mutable_chunks(0) = Answer(plan, 1).chunks(0);
  EXPECT_EQ(decode(foreign).code(), absl::StatusCode::kInternal);

  proto::PullResponse unknown = good;
  unknown.mutable_chunks(0)->mutable_id()->set_tensor("nope");
  EXPECT_FALSE(decode(unknown).ok());

  proto::PullResponse short_payload = good;
  short_payload.mutable_chunks(0)->mutable_weights()->mutable_data()->pop_back();
  EXPECT_EQ(decode(short_payload).code(), absl::StatusCode::kInvalidArgument);

  proto::PullResponse wrong_count = good;
  wrong_count.mutable_chunks(0)->mutable_weights()->set_element_count(1);
  EXPECT_EQ(decode(wrong_count).code(), absl::StatusCode::kInvalidArgument);

  proto::PullResponse no_encoding = good;
  no_encoding.mutable_chunks(0)->mutable_weights()->set_encoding(proto::ENCODING_UNSPECIFIED);
  EXPECT_EQ(decode(no_encoding).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PullDecoderTest, EveryTruncationIsAnError) {
  const ShardPlan plan = TestPlan();
  const std::string bytes = Answer(plan, 1).SerializeAsString();
  std::vector<float> weights(plan.total_elements());
  std::vector<uint64_t> versions(plan.chunks().size());
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(Decode(bytes.substr(0, n), plan, 1, &weights, &versions).ok()) << n << " bytes";
  }
  EXPECT_TRUE(Decode(bytes, plan, 1, &weights, &versions).ok());
}

TEST(PullDecoderTest, CorruptBytesNeverCrash) {
  const ShardPlan plan = TestPlan();
  const std::string good = Answer(plan, 0).SerializeAsString();
  std::vector<float> weights(plan.total_elements());
  std::vector<uint64_t> versions(plan.chunks().size());
  std::mt19937 gen(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(gen() % 4);
    for (int f = 0; f < flips; ++f) bytes[gen() % bytes.size()] = static_cast<char>(gen());
    (void)Decode(bytes, plan, 0, &weights, &versions);  // any status; no crash, no overrun
  }
  std::string garbage(200, '\0');
  for (char& c : garbage) c = static_cast<char>(gen());
  EXPECT_FALSE(Decode(garbage, plan, 0, &weights, &versions).ok());
}

}  // namespace
}  // namespace orrery::server
