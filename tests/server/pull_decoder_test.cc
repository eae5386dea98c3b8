#include "server/pull_decoder.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "server/shard_store.h"
#include "server/tensor_codec.h"
#include "tests/server/layout_util.h"
#include "tests/server/pull_util.h"

namespace orrery::server {
namespace {

using google::protobuf::io::ArrayInputStream;

// Two tensors (5 and 7 elements) in chunks of 3 over 2 shards.
ShardPlan TestPlan() { return *ShardPlan::Create(testing::MakeLayout({{"a", 5}, {"b", 7}}, 3, 2)); }

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
  EXPECT_TRUE(testing::FillPull(store, proto::FP32, &r).ok());
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

// Each part of a pull (ShardStore::AnswerPull with part/parts) decodes into place with the chunks
// the client expects of it; a part holding another part's chunk, or missing one, is an error.
TEST(PullDecoderTest, DecodesPartsIntoPlaceAndRejectsForeignChunks) {
  const ShardPlan plan = TestPlan();
  ShardStore store(&plan, 0, 0.0f);
  ASSERT_TRUE(store.InitializeFromFlat(Flat(plan)).ok());
  const std::vector<int>& chunks = plan.ChunksOfShard(0);
  ASSERT_GE(chunks.size(), 2u);
  auto part_chunks = [&](size_t p, size_t parts) {
    return std::vector<int>(chunks.begin() + chunks.size() * p / parts,
                            chunks.begin() + chunks.size() * (p + 1) / parts);
  };
  auto decode = [&](const proto::PullResponse& r, const std::vector<int>& expected,
                    std::vector<float>* weights, std::vector<uint64_t>* versions) {
    const std::string bytes = r.SerializeAsString();
    ArrayInputStream in(bytes.data(), static_cast<int>(bytes.size()));
    return DecodePullResponsePart(&in, plan, 0, expected, *weights, *versions);
  };
  for (size_t parts = 1; parts <= chunks.size(); ++parts) {
    std::vector<float> weights(plan.total_elements(), -9.0f);
    std::vector<uint64_t> versions(plan.chunks().size(), 7);
    for (size_t p = 0; p < parts; ++p) {
      proto::PullResponse r;
      ASSERT_TRUE(testing::FillPull(store, proto::FP32, &r, p, parts).ok());
      ASSERT_TRUE(decode(r, part_chunks(p, parts), &weights, &versions).ok()) << p << "/" << parts;
    }
    const std::vector<float> flat = Flat(plan);
    for (int i : chunks) {
      const Chunk& c = plan.chunks()[i];
      for (uint64_t e = c.offset; e < c.offset + c.length; ++e) ASSERT_EQ(weights[e], flat[e]);
      EXPECT_EQ(versions[i], 0u);
    }
  }
  std::vector<float> weights(plan.total_elements());
  std::vector<uint64_t> versions(plan.chunks().size());
  proto::PullResponse first, second;
  ASSERT_TRUE(testing::FillPull(store, proto::FP32, &first, 0, 2).ok());
  ASSERT_TRUE(testing::FillPull(store, proto::FP32, &second, 1, 2).ok());
  EXPECT_EQ(decode(first, part_chunks(1, 2), &weights, &versions).code(),
            absl::StatusCode::kInternal);  // part 0's chunks where part 1's were expected
  proto::PullResponse short_part = second;
  short_part.mutable_chunks()->RemoveLast();
  EXPECT_EQ(decode(short_part, part_chunks(1, 2), &weights, &versions).code(),
            absl::StatusCode::kInternal);
  proto::PullResponse whole;
  // An old shard ignoring part/parts.
  ASSERT_TRUE(testing::FillPull(store, proto::FP32, &whole).ok());
  EXPECT_FALSE(decode(whole, part_chunks(0, 2), &weights, &versions).ok());
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

// The same answer with every payload re-encoded as FIXED16 (FL chosen per chunk, nearest).
proto::PullResponse Fixed16Answer(const ShardPlan& plan, uint32_t shard) {
  proto::PullResponse r = Answer(plan, shard);
  for (proto::PullChunk& c : *r.mutable_chunks()) {
    std::vector<float> values(c.weights().element_count());
    EXPECT_TRUE(DecodeFloats(c.weights(), values).ok());
    EXPECT_TRUE(EncodeFloats(values, proto::FIXED16, c.mutable_weights()).ok());
  }
  return r;
}

TEST(PullDecoderTest, DecodesFixed16AnswersIntoPlace) {
  const ShardPlan plan = TestPlan();
  std::vector<float> weights(plan.total_elements(), -9.0f);
  std::vector<uint64_t> versions(plan.chunks().size(), 0);
  size_t fixed_bytes = 0, fp32_bytes = 0;
  for (uint32_t s = 0; s < 2; ++s) {
    const proto::PullResponse r = Fixed16Answer(plan, s);
    EXPECT_EQ(r.chunks(0).weights().encoding(), proto::FIXED16);
    fixed_bytes += r.ByteSizeLong();
    fp32_bytes += Answer(plan, s).ByteSizeLong();
    ASSERT_TRUE(Decode(r.SerializeAsString(), plan, s, &weights, &versions).ok());
  }
  EXPECT_EQ(weights, Flat(plan)) << "multiples of 1/4 are exact in FIXED16";
  EXPECT_EQ(versions, std::vector<uint64_t>(plan.chunks().size(), 1));
  EXPECT_LT(fixed_bytes, fp32_bytes);
}

TEST(PullDecoderTest, RejectsBadFixed16Headers) {
  const ShardPlan plan = TestPlan();
  std::vector<float> weights(plan.total_elements());
  std::vector<uint64_t> versions(plan.chunks().size());
  auto decode = [&](const proto::PullResponse& r) {
    return Decode(r.SerializeAsString(), plan, 0, &weights, &versions);
  };
  const proto::PullResponse good = Fixed16Answer(plan, 0);
  ASSERT_TRUE(decode(good).ok());

  proto::PullResponse bad_fl = good;
  bad_fl.mutable_chunks(0)->mutable_weights()->set_fractional_bits(31);
  absl::Status st = decode(bad_fl);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("fractional_bits 31"), std::string_view::npos) << st;

  proto::PullResponse negative_fl = good;
  negative_fl.mutable_chunks(0)->mutable_weights()->set_fractional_bits(-3);
  EXPECT_EQ(decode(negative_fl).code(), absl::StatusCode::kInvalidArgument);

  proto::PullResponse short_payload = good;
  short_payload.mutable_chunks(0)->mutable_weights()->mutable_data()->pop_back();
  EXPECT_EQ(decode(short_payload).code(), absl::StatusCode::kInvalidArgument);

  proto::PullResponse relabelled = good;  // FIXED16 bytes under an FP32 tag
  relabelled.mutable_chunks(0)->mutable_weights()->set_encoding(proto::FP32);
  st = decode(relabelled);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("FP32 payload"), std::string_view::npos) << st;
}

TEST(PullDecoderTest, EveryTruncationOfAFixed16AnswerIsAnError) {
  const ShardPlan plan = TestPlan();
  const std::string bytes = Fixed16Answer(plan, 1).SerializeAsString();
  std::vector<float> weights(plan.total_elements());
  std::vector<uint64_t> versions(plan.chunks().size());
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(Decode(bytes.substr(0, n), plan, 1, &weights, &versions).ok()) << n << " bytes";
  }
  EXPECT_TRUE(Decode(bytes, plan, 1, &weights, &versions).ok());
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
  std::vector<float> weights(plan.total_elements());
  std::vector<uint64_t> versions(plan.chunks().size());
  const std::string answers[2] = {Answer(plan, 0).SerializeAsString(),
                                  Fixed16Answer(plan, 0).SerializeAsString()};
  std::mt19937 gen(7);
  for (int trial = 0; trial < 4000; ++trial) {
    const std::string& good = answers[trial % 2];
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
