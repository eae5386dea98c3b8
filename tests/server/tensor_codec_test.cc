// The wire codec's dispatch: FP32 and FIXED16 payloads checked, decoded, accumulated and applied
// through one set of functions, with headers never trusted.
#include "server/tensor_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string_view>
#include <vector>

namespace orrery::server {
namespace {

proto::EncodedTensor Fixed(const std::vector<float>& values, int fl) {
  proto::EncodedTensor t;
  Fixed16Encoding how;
  how.fl = fl;
  EXPECT_TRUE(EncodeFloats(values, proto::FIXED16, &t, how).ok());
  return t;
}

bool Mentions(const absl::Status& st, absl::string_view what) {
  return st.message().find(what) != absl::string_view::npos;
}

TEST(TensorCodecTest, Fixed16RoundTripsGridValuesExactlyInHalfTheBytes) {
  const std::vector<float> values = {0.0f, 0.5f, -1.25f, 3.0f, -0.0009765625f};
  const proto::EncodedTensor t = Fixed(values, 10);
  EXPECT_EQ(t.encoding(), proto::FIXED16);
  EXPECT_EQ(t.fractional_bits(), 10);
  EXPECT_EQ(t.data().size(), 2 * values.size());
  ASSERT_TRUE(CheckPayload(t, values.size()).ok());
  std::vector<float> out(values.size(), -7.0f);
  ASSERT_TRUE(DecodeFloats(t, out).ok());
  EXPECT_EQ(out, values);
}

TEST(TensorCodecTest, WireFractionalBitsIsTheSmallestNonSaturatingIlCappedAt15) {
  EXPECT_EQ(WireFractionalBits(std::vector<float>{0.001f, -0.002f}), 15) << "capped";
  EXPECT_EQ(WireFractionalBits(std::vector<float>{}), 15);
  EXPECT_EQ(WireFractionalBits(std::vector<float>{0.99f}), 15);   // <1, 15>: [-1, 1)
  EXPECT_EQ(WireFractionalBits(std::vector<float>{-1.0f}), 14);   // 1.0 * 2^15 > 32767
  EXPECT_EQ(WireFractionalBits(std::vector<float>{1.5f, -3.9f}), 13);
  EXPECT_EQ(WireFractionalBits(std::vector<float>{std::nanf(""), 100.0f}), 8);
  EXPECT_EQ(WireFractionalBits(std::vector<float>{1e9f}), 0);
}

TEST(TensorCodecTest, Fixed16ChosenFlHoldsTheRangeWithoutSaturating) {
  const std::vector<float> values = {-3.9f, 0.1f, 2.0f};
  proto::EncodedTensor t;
  ASSERT_TRUE(EncodeFloats(values, proto::FIXED16, &t).ok());  // nearest, FL from the range
  EXPECT_EQ(t.fractional_bits(), 13);
  std::vector<float> out(values.size());
  ASSERT_TRUE(DecodeFloats(t, out).ok());
  for (size_t i = 0; i < values.size(); ++i) EXPECT_NEAR(out[i], values[i], 0.5 / 8192) << i;
}

TEST(TensorCodecTest, Fixed16StochasticPushIsReproducibleAndUnbiased) {
  const std::vector<float> values(20000, 1e-5f);  // a third of eps at FL 15
  Fixed16Encoding how;
  how.rounding = quant::Rounding::kStochastic;
  how.stream = quant::RandomStream::For(3, 17);
  proto::EncodedTensor a, b;
  ASSERT_TRUE(EncodeFloats(values, proto::FIXED16, &a, how).ok());
  ASSERT_TRUE(EncodeFloats(values, proto::FIXED16, &b, how).ok());
  EXPECT_EQ(a.data(), b.data()) << "same learner and step: same draws";
  std::vector<float> out(values.size());
  ASSERT_TRUE(DecodeFloats(a, out).ok());
  double sum = 0;
  for (float v : out) sum += v;
  EXPECT_NEAR(sum / values.size(), 1e-5, 0.05e-5);
}

TEST(TensorCodecTest, Fixed16RefusesNonFiniteValues) {
  proto::EncodedTensor t;
  const absl::Status st = EncodeFloats(
      std::vector<float>{1.0f, std::numeric_limits<float>::infinity()}, proto::FIXED16, &t);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(st, "value 1")) << st;
}

TEST(TensorCodecTest, BadHeadersAreInvalidArgumentsSayingWhatIsWrong) {
  const proto::EncodedTensor good = Fixed({1.0f, 2.0f, 3.0f}, 12);
  ASSERT_TRUE(CheckPayload(good, 3).ok());

  proto::EncodedTensor bad_fl = good;
  bad_fl.set_fractional_bits(31);
  absl::Status st = CheckPayload(bad_fl, 3);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(st, "fractional_bits 31")) << st;
  bad_fl.set_fractional_bits(-1);
  EXPECT_EQ(CheckPayload(bad_fl, 3).code(), absl::StatusCode::kInvalidArgument);

  proto::EncodedTensor short_bytes = good;
  short_bytes.mutable_data()->pop_back();
  st = CheckPayload(short_bytes, 3);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(st, "must be 6 bytes, got 5")) << st;

  proto::EncodedTensor fp32_sized = good;  // FP32 bytes under a FIXED16 tag
  fp32_sized.mutable_data()->append(6, '\0');
  EXPECT_EQ(CheckPayload(fp32_sized, 3).code(), absl::StatusCode::kInvalidArgument);

  proto::EncodedTensor fixed_as_fp32 = good;  // FIXED16 bytes under an FP32 tag
  fixed_as_fp32.set_encoding(proto::FP32);
  st = CheckPayload(fixed_as_fp32, 3);
  EXPECT_TRUE(Mentions(st, "FP32 payload of 3 elements must be 12 bytes, got 6")) << st;

  st = CheckPayload(good, 4);
  EXPECT_TRUE(Mentions(st, "declares 3 elements but 4")) << st;

  proto::EncodedTensor unknown = good;
  unknown.set_encoding(static_cast<proto::Encoding>(9));
  st = CheckPayload(unknown, 3);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(st, "unknown encoding 9")) << st;

  std::vector<float> out(3, 5.0f);
  EXPECT_FALSE(DecodeFloats(short_bytes, out).ok());
  EXPECT_EQ(out, std::vector<float>(3, 5.0f)) << "untouched on error";
}

TEST(TensorCodecTest, Fixed16PayloadsAreAlwaysFinite) {
  // Every int16 word, including the extremes, is a finite value.
  proto::EncodedTensor t;
  t.set_encoding(proto::FIXED16);
  t.set_element_count(2);
  t.set_fractional_bits(0);
  t.set_data(std::string("\xff\x7f\x00\x80", 4));
  ASSERT_TRUE(CheckPayload(t, 2).ok());
  EXPECT_TRUE(PayloadAllFinite(t));
  proto::EncodedTensor nan;
  const float v[1] = {std::nanf("")};
  ASSERT_TRUE(EncodeFloats(v, proto::FP32, &nan).ok());
  EXPECT_FALSE(PayloadAllFinite(nan));
}

TEST(TensorCodecTest, Fixed16AccumulateAndApplyUseTheDecodedValues) {
  const std::vector<float> g = {0.5f, -0.25f, 1.75f};
  const proto::EncodedTensor t = Fixed(g, 8);
  std::vector<float> acc = {1.0f, 1.0f, 1.0f};
  AccumulatePayload(t, 2.0f, acc);
  EXPECT_EQ(acc, (std::vector<float>{2.0f, 0.5f, 4.5f}));

  std::vector<float> w = {1.0f, 1.0f, 1.0f};
  ApplyPayload(t, 0.5f, 0.0f, w, {});
  EXPECT_EQ(w, (std::vector<float>{0.75f, 1.125f, 0.125f}));

  std::vector<float> w2 = {1.0f, 1.0f, 1.0f}, v = {1.0f, 0.0f, -1.0f};
  ApplyPayload(t, 1.0f, 0.5f, w2, v);
  EXPECT_EQ(v, (std::vector<float>{1.0f, -0.25f, 1.25f}));
  EXPECT_EQ(w2, (std::vector<float>{0.0f, 1.25f, -0.25f}));
}

TEST(TensorCodecTest, ApplyMatchesAccumulateThenSubtractForBothEncodings) {
  const std::vector<float> g = {0.3f, -1.7f, 2.2f, 1e-3f};
  proto::EncodedTensor fp32;
  ASSERT_TRUE(EncodeFloats(g, proto::FP32, &fp32).ok());
  for (const proto::EncodedTensor& t : {fp32, Fixed(g, 12)}) {
    std::vector<float> acc(g.size(), 0.0f), w1(g.size(), 0.5f), w2(g.size(), 0.5f);
    AccumulatePayload(t, 0.1f, acc);
    for (size_t i = 0; i < g.size(); ++i) w1[i] -= acc[i];
    ApplyPayload(t, 0.1f, 0.0f, w2, {});
    EXPECT_EQ(w1, w2) << proto::Encoding_Name(t.encoding());
  }
}

// A payload in pieces (as read from gRPC slices without copying) gives exactly the results of
// the same bytes in one piece, for every way of cutting it, including inside an element.
TEST(TensorCodecTest, PayloadsInPiecesMatchTheWholePayload) {
  constexpr size_t kN = 37;
  std::vector<float> values(kN);
  for (size_t i = 0; i < kN; ++i) values[i] = 0.37f * static_cast<float>(i) - 5.0f;
  for (proto::Encoding encoding : {proto::FP32, proto::FIXED16}) {
    SCOPED_TRACE(encoding == proto::FP32 ? "FP32" : "FIXED16");
    proto::EncodedTensor whole;
    ASSERT_TRUE(EncodeFloats(values, encoding, &whole).ok());
    const std::string& bytes = whole.data();
    std::vector<float> decoded(kN), acc(kN, 1.0f), w(kN, 2.0f), v(kN, 0.5f);
    ASSERT_TRUE(DecodeFloats(whole, decoded).ok());
    AccumulatePayload(whole, 0.25f, acc);
    ApplyPayload(whole, 0.5f, 0.9f, w, v);
    std::vector<float> w_plain(kN, 2.0f);
    ApplyPayload(whole, 0.5f, 0.0f, w_plain, {});
    // Cut points: every pair (a, b) with a <= b, giving pieces [0,a) [a,b) [b,end) (some empty).
    for (size_t a = 0; a <= bytes.size(); a += 3) {
      for (size_t b = a; b <= bytes.size(); b += 5) {
        PayloadView view;
        view.encoding = whole.encoding();
        view.fractional_bits = whole.fractional_bits();
        view.element_count = whole.element_count();
        const absl::string_view all(bytes);
        view.pieces = {all.substr(0, a), all.substr(a, b - a), all.substr(b)};
        ASSERT_TRUE(CheckPayload(view, kN).ok());
        std::vector<float> d(kN), ac(kN, 1.0f), ww(kN, 2.0f), vv(kN, 0.5f), wp(kN, 2.0f);
        ASSERT_TRUE(DecodeFloats(view, d).ok());
        AccumulatePayload(view, 0.25f, ac);
        ApplyPayload(view, 0.5f, 0.9f, ww, vv);
        ApplyPayload(view, 0.5f, 0.0f, wp, {});
        ASSERT_EQ(d, decoded) << "cut at " << a << ", " << b;
        ASSERT_EQ(ac, acc) << "cut at " << a << ", " << b;
        ASSERT_EQ(ww, w) << "cut at " << a << ", " << b;
        ASSERT_EQ(vv, v) << "cut at " << a << ", " << b;
        ASSERT_EQ(wp, w_plain) << "cut at " << a << ", " << b;
        ASSERT_TRUE(PayloadAllFinite(view));
      }
    }
  }
  // A NaN whose bytes straddle two pieces is found.
  std::vector<float> bad(8, 1.0f);
  bad[3] = std::numeric_limits<float>::quiet_NaN();
  proto::EncodedTensor t;
  ASSERT_TRUE(EncodeFloats(bad, proto::FP32, &t).ok());
  PayloadView view = PayloadView::Of(t);
  const absl::string_view all(t.data());
  view.pieces = {all.substr(0, 14), all.substr(14)};  // element 3 is bytes 12..15
  EXPECT_FALSE(PayloadAllFinite(view));
  EXPECT_EQ(CheckPayload(view, 7).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace orrery::server
