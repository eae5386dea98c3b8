// FIXED16 wire payloads: round trips, header checks that never trust the peer, NaN refusal.
#include "server/fixed16_payload.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace orrery::server {
namespace {

TEST(Fixed16PayloadTest, RoundTripIsWithinHalfAnEpsilonWithNearest) {
  const std::vector<float> values = {0.0f, 0.1f, -0.25f, 1.9f, -2.0f, 1e-5f};
  proto::EncodedTensor t;
  ASSERT_TRUE(EncodeFixed16Payload(values, quant::FixedFormat{14}, quant::Rounding::kNearest, {}, &t).ok());
  EXPECT_EQ(t.encoding(), proto::FIXED16);
  EXPECT_EQ(t.element_count(), values.size());
  EXPECT_EQ(t.fractional_bits(), 14);
  EXPECT_EQ(t.data().size(), 2 * values.size()) << "half the bytes of FP32";
  ASSERT_TRUE(CheckFixed16Payload(t.fractional_bits(), t.data().size(), values.size()).ok());
  std::vector<float> out(values.size());
  DecodeFixed16Payload(t.data(), quant::FixedFormat{14}, out);
  for (size_t i = 0; i < values.size(); ++i) EXPECT_NEAR(out[i], values[i], 0.5 / 16384) << i;
}

TEST(Fixed16PayloadTest, StochasticEncodingIsUnbiased) {
  // 1e-5 is a sixth of an epsilon at FL = 14: nearest sends 0, stochastic sends eps 1 time in 6.
  const std::vector<float> values(60000, 1e-5f);
  proto::EncodedTensor t;
  ASSERT_TRUE(EncodeFixed16Payload(values, quant::FixedFormat{14}, quant::Rounding::kStochastic,
                                   quant::RandomStream::For(1, 2, 3), &t)
                  .ok());
  std::vector<float> out(values.size());
  DecodeFixed16Payload(t.data(), quant::FixedFormat{14}, out);
  double sum = 0;
  for (float v : out) sum += v;
  EXPECT_NEAR(sum / values.size(), 1e-5, 0.05e-5);
}

TEST(Fixed16PayloadTest, AccumulateMatchesDecodeThenAdd) {
  const std::vector<float> values = {0.5f, -0.125f, 3.0f};
  proto::EncodedTensor t;
  ASSERT_TRUE(EncodeFixed16Payload(values, quant::FixedFormat{10}, quant::Rounding::kNearest, {}, &t).ok());
  std::vector<float> acc = {1.0f, 1.0f, 1.0f};
  AccumulateFixed16Payload(t.data(), quant::FixedFormat{10}, 0.5f, acc);
  EXPECT_EQ(acc, (std::vector<float>{1.25f, 0.9375f, 2.5f}));
}

TEST(Fixed16PayloadTest, MalformedHeadersAreRejected) {
  EXPECT_EQ(CheckFixed16Payload(-1, 8, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckFixed16Payload(31, 8, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckFixed16Payload(12, 7, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckFixed16Payload(12, 16, 4).code(), absl::StatusCode::kInvalidArgument)
      << "FP32-sized bytes under a FIXED16 tag";
  const absl::Status st = CheckFixed16Payload(40, 8, 4);
  EXPECT_NE(st.message().find("fractional_bits 40"), std::string_view::npos) << st;
  EXPECT_TRUE(CheckFixed16Payload(0, 8, 4).ok());
  EXPECT_TRUE(CheckFixed16Payload(30, 0, 0).ok());
}

TEST(Fixed16PayloadTest, NonFiniteValuesAreRefusedAndLeaveTheOutputUntouched) {
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    proto::EncodedTensor t;
    t.set_encoding(proto::FP32);
    const std::vector<float> values = {1.0f, bad};
    const absl::Status st =
        EncodeFixed16Payload(values, quant::FixedFormat{8}, quant::Rounding::kStochastic, {}, &t);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("value 1"), std::string_view::npos) << st;
    EXPECT_EQ(t.encoding(), proto::FP32);
    EXPECT_TRUE(t.data().empty());
  }
  proto::EncodedTensor t;
  EXPECT_FALSE(EncodeFixed16Payload(std::vector<float>{1.0f}, quant::FixedFormat{31},
                                    quant::Rounding::kNearest, {}, &t)
                   .ok());
}

}  // namespace
}  // namespace orrery::server
