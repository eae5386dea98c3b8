#include "server/aliased_serializer.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/support/slice.h>

#include "parameter_server.pb.h"
#include "server/sharding.h"
#include "tests/server/layout_util.h"

namespace orrery::server {
namespace {

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// A pull answer with chunks of `floats` values each.
std::shared_ptr<proto::PullResponse> Answer(int chunks, int floats) {
  auto r = std::make_shared<proto::PullResponse>();
  r->set_version(12);
  for (int c = 0; c < chunks; ++c) {
    proto::PullChunk* pc = r->add_chunks();
    pc->mutable_id()->set_tensor("layer" + std::to_string(c % 3));
    pc->mutable_id()->set_index(static_cast<uint32_t>(c));
    pc->set_version(12);
    pc->mutable_weights()->set_encoding(proto::FP32);
    pc->mutable_weights()->set_element_count(static_cast<uint32_t>(floats));
    std::string data(static_cast<size_t>(floats) * 4, '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + c);
    pc->mutable_weights()->set_data(data);
  }
  return r;
}

TEST(AliasedSerializerTest, BytesAreTheMessagesOwnSerialisation) {
  for (int floats : {0, 3, 1000, 16384}) {
    auto message = Answer(5, floats);
    const std::string expected = message->SerializeAsString();
    EXPECT_EQ(Bytes(SerializeAliased(message)), expected) << floats << " floats per chunk";
  }
}

TEST(AliasedSerializerTest, LargePayloadsAreSharedNotCopied) {
  auto message = Answer(4, 16384);
  grpc::ByteBuffer buffer = SerializeAliased(message);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(buffer.Dump(&slices).ok());
  int aliased = 0;
  for (const grpc::Slice& s : slices) {
    for (const proto::PullChunk& c : message->chunks()) {
      if (reinterpret_cast<const char*>(s.begin()) == c.weights().data().data()) ++aliased;
    }
  }
  EXPECT_EQ(aliased, 4);
}

TEST(AliasedSerializerTest, TheBufferKeepsTheMessageAlive) {
  auto message = Answer(2, 16384);
  const std::string expected = message->SerializeAsString();
  std::weak_ptr<proto::PullResponse> watch = message;
  auto buffer = std::make_unique<grpc::ByteBuffer>(SerializeAliased(std::move(message)));
  ASSERT_FALSE(watch.expired());
  grpc::ByteBuffer copy = *buffer;
  buffer.reset();
  EXPECT_EQ(Bytes(copy), expected);
  copy.Clear();
  EXPECT_TRUE(watch.expired());
}

// A shard's FP32 pull answer (payloads aliased into its weights, ShardStore::AnswerPull), with
// chunks above and below the size that gets a slice of its own, whole and in parts.
TEST(AliasedSerializerTest, PullAnswersSerialiseAsTheirResponse) {
  const ShardPlan plan = *ShardPlan::Create(
      testing::MakeLayout({{"conv", 70000}, {"bias", 37}, {"fc", 16384}}, 16384, 1));
  ShardStore store(&plan, 0, 0.0f);
  std::vector<float> w(plan.total_elements());
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) * 0.001f - 3.0f;
  ASSERT_TRUE(store.InitializeFromFlat(w).ok());
  for (uint32_t parts : {1u, 2u, 3u}) {
    for (uint32_t part = 0; part < parts; ++part) {
      auto answer = std::make_shared<PullAnswer>(*store.AnswerPull(proto::FP32, part, parts));
      ASSERT_FALSE(answer->aliased.empty());
      const std::string expected = answer->Materialize().SerializeAsString();
      grpc::ByteBuffer buffer = SerializePullAnswer(answer);
      EXPECT_EQ(Bytes(buffer), expected) << "part " << part << " of " << parts;
      // Every payload of 4 KB or more is a slice pointing into the weights.
      std::vector<grpc::Slice> slices;
      ASSERT_TRUE(buffer.Dump(&slices).ok());
      size_t aliased = 0, large = 0;
      for (const PullAnswer::Span& span : answer->aliased) {
        if (span.length * sizeof(float) >= 4096) ++large;
        for (const grpc::Slice& s : slices) {
          if (reinterpret_cast<const float*>(s.begin()) == answer->weights->data() + span.offset) {
            ++aliased;
          }
        }
      }
      EXPECT_EQ(aliased, large);
    }
  }
  // FIXED16 answers carry their payloads and go through SerializeAliased.
  auto fixed = std::make_shared<PullAnswer>(*store.AnswerPull(proto::FIXED16));
  EXPECT_TRUE(fixed->aliased.empty());
  EXPECT_EQ(Bytes(SerializePullAnswer(fixed)), fixed->response.SerializeAsString());
}

TEST(AliasedSerializerTest, ThePullBufferKeepsTheWeightsAlive) {
  const ShardPlan plan = *ShardPlan::Create(testing::MakeLayout({{"w", 50000}}, 16384, 1));
  auto store = std::make_unique<ShardStore>(&plan, 0, 0.0f);
  ASSERT_TRUE(store->InitializeFromFlat(std::vector<float>(50000, 0.25f)).ok());
  auto answer = std::make_shared<PullAnswer>(*store->AnswerPull(proto::FP32));
  const std::string expected = answer->Materialize().SerializeAsString();
  std::weak_ptr<const std::vector<float>> watch = answer->weights;
  grpc::ByteBuffer buffer = SerializePullAnswer(std::move(answer));
  store.reset();
  ASSERT_FALSE(watch.expired());
  EXPECT_EQ(Bytes(buffer), expected);
  buffer.Clear();
  EXPECT_TRUE(watch.expired());
}

}  // namespace
}  // namespace orrery::server
