#include "server/push_decoder.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "server/tensor_codec.h"
#include "server/wire_reading.h"
#include "tests/server/pieces_util.h"

namespace orrery::server {
namespace {

proto::PushRequest Push(int chunks, int floats, proto::Encoding encoding) {
  proto::PushRequest r;
  r.set_job_id("job-a");
  r.set_token("t0ken");
  r.set_learner_id(3);
  r.set_step(41);
  r.set_samples(32);
  r.set_loss(0.75f);
  r.set_part(1);
  r.set_parts(2);
  for (int c = 0; c < chunks; ++c) {
    proto::PushChunk* pc = r.add_chunks();
    pc->mutable_id()->set_tensor(c % 2 ? "conv.w" : "fc.b");
    pc->mutable_id()->set_index(static_cast<uint32_t>(c));
    pc->set_base_version(7 + c);
    std::vector<float> g(static_cast<size_t>(floats));
    for (size_t i = 0; i < g.size(); ++i) g[i] = 0.01f * static_cast<float>(i) - 0.3f * c;
    EXPECT_TRUE(EncodeFloats(g, encoding, pc->mutable_gradient()).ok());
  }
  return r;
}

// `bytes` cut at the given offsets.
std::vector<absl::string_view> Cut(const std::string& bytes, std::vector<size_t> cuts) {
  std::sort(cuts.begin(), cuts.end());
  std::vector<absl::string_view> pieces;
  size_t from = 0;
  for (size_t c : cuts) {
    pieces.push_back(absl::string_view(bytes).substr(from, c - from));
    from = c;
  }
  pieces.push_back(absl::string_view(bytes).substr(from));
  return pieces;
}

// The decoder must agree with protobuf on `bytes`: both refuse it, or both accept it and give
// the same message.
void ExpectAgreesWithProtobuf(const std::string& bytes,
                              const std::vector<absl::string_view>& pieces,
                              const std::string& what) {
  proto::PushRequest reference;
  const bool parsed = reference.ParseFromString(bytes);
  absl::StatusOr<ReceivedPush> decoded = testing::DecodePieces(pieces);
  ASSERT_EQ(decoded.ok(), parsed) << what << ": " << decoded.status();
  if (!parsed) {
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
    return;
  }
  ASSERT_EQ(decoded->payloads.size(), static_cast<size_t>(decoded->request.chunks_size()));
  EXPECT_EQ(decoded->Materialize().SerializeAsString(), reference.SerializeAsString()) << what;
  for (int i = 0; i < decoded->request.chunks_size(); ++i) {
    EXPECT_TRUE(decoded->request.chunks(i).gradient().data().empty()) << "copied: " << what;
  }
}

TEST(PushDecoderTest, DecodesWhatProtobufParsesForEveryCut) {
  std::mt19937 gen(7);
  for (proto::Encoding encoding : {proto::FP32, proto::FIXED16}) {
    for (int floats : {0, 1, 5, 300}) {
      const std::string bytes = Push(4, floats, encoding).SerializeAsString();
      for (int trial = 0; trial < 60; ++trial) {
        std::vector<size_t> cuts;
        const int n = trial % 6;
        for (int k = 0; k < n; ++k) cuts.push_back(gen() % (bytes.size() + 1));
        ExpectAgreesWithProtobuf(bytes, Cut(bytes, cuts),
                                 "floats " + std::to_string(floats) + " trial " +
                                     std::to_string(trial));
      }
      // One byte per piece.
      std::vector<size_t> every(bytes.size());
      for (size_t i = 0; i < every.size(); ++i) every[i] = i;
      ExpectAgreesWithProtobuf(bytes, Cut(bytes, every), "1-byte pieces");
    }
  }
}

TEST(PushDecoderTest, PayloadsPointIntoTheReceivedBytes) {
  const std::string bytes = Push(3, 16384, proto::FP32).SerializeAsString();
  const std::vector<absl::string_view> pieces = Cut(bytes, {bytes.size() / 3, bytes.size() / 2});
  absl::StatusOr<ReceivedPush> decoded = testing::DecodePieces(pieces);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->payloads.size(), 3u);
  size_t pieces_total = 0;
  for (const PayloadView& v : decoded->payloads) {
    EXPECT_EQ(v.encoding, proto::FP32);
    EXPECT_EQ(v.element_count, 16384u);
    EXPECT_EQ(v.byte_size(), 16384u * 4);
    for (absl::string_view p : v.pieces) {
      EXPECT_GE(p.data(), bytes.data());
      EXPECT_LE(p.data() + p.size(), bytes.data() + bytes.size());
      ++pieces_total;
    }
  }
  EXPECT_EQ(pieces_total, 5u);  // two of the three payloads are cut once
  std::vector<float> g(16384);
  ASSERT_TRUE(DecodeFloats(decoded->Payload(1), g).ok());
  EXPECT_FLOAT_EQ(g[100], 0.01f * 100 - 0.3f);
}

// Orders protobuf never writes but accepts: fields after the chunks, a chunk's gradient in two
// occurrences (merged: header in one, bytes in the other), the bytes given twice (the last wins).
TEST(PushDecoderTest, MergesFieldsAsProtobufDoes) {
  proto::PushRequest whole = Push(2, 10, proto::FP32);
  proto::PushRequest tail;
  tail.set_step(99);
  tail.set_job_id("job-b");
  proto::PushChunk first;
  *first.mutable_id() = whole.chunks(0).id();
  first.mutable_gradient()->set_encoding(proto::FP32);
  first.mutable_gradient()->set_data("first bytes, replaced");
  proto::PushChunk second;
  second.mutable_gradient()->set_element_count(2);
  second.mutable_gradient()->set_data(std::string(8, '\x01'));
  // Two occurrences of the chunks field would make two chunks (repeated), so the merge is built
  // inside one chunk by hand: its bytes are first's followed by second's.
  const std::string chunk_bytes = first.SerializeAsString() + second.SerializeAsString();
  std::string merged_chunk;
  {
    google::protobuf::io::StringOutputStream s(&merged_chunk);
    google::protobuf::io::CodedOutputStream out(&s);
    out.WriteTag(wire::BytesTag(proto::PushRequest::kChunksFieldNumber));
    out.WriteVarint32(static_cast<uint32_t>(chunk_bytes.size()));
    out.WriteRaw(chunk_bytes.data(), static_cast<int>(chunk_bytes.size()));
  }
  const std::string bytes = whole.SerializeAsString() + tail.SerializeAsString() + merged_chunk;
  ExpectAgreesWithProtobuf(bytes, Cut(bytes, {5, bytes.size() - 7}), "merged fields");
}

TEST(PushDecoderTest, RefusesWhatProtobufRefusesAndNeverReadsPastTheEnd) {
  const std::string bytes = Push(3, 40, proto::FP32).SerializeAsString();
  for (size_t n = 0; n < bytes.size(); n += 3) {
    const std::string prefix = bytes.substr(0, n);
    ExpectAgreesWithProtobuf(prefix, Cut(prefix, {n / 2}), "prefix " + std::to_string(n));
  }
  std::mt19937 gen(11);
  for (int trial = 0; trial < 300; ++trial) {
    std::string corrupt = bytes;
    for (int k = 0; k < 3; ++k) corrupt[gen() % corrupt.size()] = static_cast<char>(gen());
    ExpectAgreesWithProtobuf(corrupt, Cut(corrupt, {gen() % corrupt.size()}),
                             "corrupt " + std::to_string(trial));
  }
  // Tags and lengths in more than 5 bytes (the older CodedInputStream takes up to 10); found by
  // fuzz_push_decode.
  const std::string overlong_tag =
      std::string("\x0a\x01w", 3) + "\xf0\xfc\xe5\xef\xf7\xfd\xef\xff\x10\x04";
  ExpectAgreesWithProtobuf(overlong_tag, Cut(overlong_tag, {4}), "overlong tag");
  const std::string overlong_length = std::string("\x0a\x81\x80\x80\x80\x80\x00w", 8);
  ExpectAgreesWithProtobuf(overlong_length, Cut(overlong_length, {}), "overlong length");
  // A tensor name that is not UTF-8 (proto3 strings must be).
  proto::PushRequest bad = Push(1, 4, proto::FP32);
  bad.mutable_chunks(0)->mutable_id()->set_tensor("\xff\xfe");
  const std::string bad_bytes = bad.SerializeAsString();
  ExpectAgreesWithProtobuf(bad_bytes, Cut(bad_bytes, {}), "not UTF-8");
}

}  // namespace
}  // namespace orrery::server
