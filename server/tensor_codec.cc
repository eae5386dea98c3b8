#include "server/tensor_codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "server/fixed16_payload.h"

namespace orrery::server {
namespace {
static_assert(std::endian::native == std::endian::little,
              "FP32 payloads are little-endian; add byte swapping for big-endian hosts");

std::string_view Bytes(const proto::EncodedTensor& in) { return in.data(); }

// The format of a FIXED16 payload that passed CheckPayload.
quant::FixedFormat CheckedFormat(const proto::EncodedTensor& in) {
  return quant::FixedFormat{in.fractional_bits()};
}

// The update of ApplyPayload, with g[i] = value(i).
template <typename Value>
void Apply(Value value, float scale, float momentum, std::span<float> weights,
           std::span<float> velocity) {
  float* w = weights.data();
  const size_t n = weights.size();
  if (velocity.empty()) {
    for (size_t i = 0; i < n; ++i) w[i] -= scale * value(i);
    return;
  }
  float* v = velocity.data();
  for (size_t i = 0; i < n; ++i) {
    v[i] = momentum * v[i] + scale * value(i);
    w[i] -= v[i];
  }
}

}  // namespace

int WireFractionalBits(std::span<const float> values) {
  float max_abs = 0.0f;
  for (float v : values) {
    const float a = std::fabs(v);
    if (a > max_abs) max_abs = a;  // false for NaN
  }
  return std::min(quant::ChooseFractionalBits(max_abs), kMaxWireFractionalBits);
}

absl::Status EncodeFloats(std::span<const float> values, proto::Encoding encoding,
                          proto::EncodedTensor* out, const Fixed16Encoding& fixed16) {
  switch (encoding) {
    case proto::FP32:
    case proto::ENCODING_UNSPECIFIED: {
      out->set_encoding(proto::FP32);
      out->set_element_count(static_cast<uint32_t>(values.size()));
      out->set_fractional_bits(0);
      // assign, not resize + memcpy: one pass over the bytes instead of two.
      out->mutable_data()->assign(reinterpret_cast<const char*>(values.data()),
                                  values.size() * sizeof(float));
      return absl::OkStatus();
    }
    case proto::FIXED16: {
      const int fl = fixed16.fl.has_value() ? *fixed16.fl : WireFractionalBits(values);
      return EncodeFixed16Payload(values, quant::FixedFormat{fl}, fixed16.rounding,
                                  fixed16.stream, out);
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot encode in unknown encoding ", static_cast<int>(encoding),
          "; use FP32 or FIXED16"));
  }
}

absl::Status CheckPayloadHeader(proto::Encoding encoding, int32_t fractional_bits,
                                uint64_t element_count, size_t byte_size, size_t elements) {
  if (element_count != elements) {
    return absl::InvalidArgumentError(absl::StrCat("payload declares ", element_count,
                                                   " elements but ", elements, " are expected"));
  }
  switch (encoding) {
    case proto::FP32: {
      const size_t want = elements * sizeof(float);
      if (byte_size != want) {
        return absl::InvalidArgumentError(absl::StrCat("FP32 payload of ", elements,
                                                       " elements must be ", want,
                                                       " bytes, got ", byte_size));
      }
      return absl::OkStatus();
    }
    case proto::FIXED16:
      return CheckFixed16Payload(fractional_bits, byte_size, elements);
    case proto::ENCODING_UNSPECIFIED:
      return absl::InvalidArgumentError("payload has no encoding set; use FP32 or FIXED16");
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "payload has unknown encoding ", static_cast<int>(encoding), "; use FP32 or FIXED16"));
  }
}

absl::Status CheckPayload(const proto::EncodedTensor& in, size_t elements) {
  return CheckPayloadHeader(in.encoding(), in.fractional_bits(), in.element_count(),
                            in.data().size(), elements);
}

absl::Status DecodeFloats(const proto::EncodedTensor& in, std::span<float> out) {
  absl::Status st = CheckPayload(in, out.size());
  if (!st.ok()) return st;
  if (in.encoding() == proto::FIXED16) {
    DecodeFixed16Payload(Bytes(in), CheckedFormat(in), out);
  } else if (!out.empty()) {
    std::memcpy(out.data(), in.data().data(), out.size() * sizeof(float));
  }
  return absl::OkStatus();
}

bool PayloadAllFinite(const proto::EncodedTensor& in) {
  // Fixed point has no NaN or Inf.
  if (in.encoding() == proto::FIXED16) return true;
  const char* p = in.data().data();
  const size_t n = in.data().size() / sizeof(uint32_t);
  // A float is NaN or Inf exactly when its exponent bits are all ones; the integer test
  // vectorises, std::isfinite on floats does not.
  uint32_t non_finite = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, p + i * sizeof bits, sizeof bits);
    non_finite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return non_finite == 0;
}

void AccumulatePayload(const proto::EncodedTensor& in, float scale, std::span<float> acc) {
  if (in.encoding() == proto::FIXED16) {
    AccumulateFixed16Payload(Bytes(in), CheckedFormat(in), scale, acc);
    return;
  }
  const char* p = in.data().data();
  float* a = acc.data();
  const size_t n = acc.size();
  for (size_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, p + i * sizeof(float), sizeof v);
    a[i] += scale * v;
  }
}

void ApplyPayload(const proto::EncodedTensor& in, float scale, float momentum,
                  std::span<float> weights, std::span<float> velocity) {
  const char* p = in.data().data();
  if (in.encoding() == proto::FIXED16) {
    const float inv = CheckedFormat(in).inverse_scale();
    Apply(
        [p, inv](size_t i) {
          int16_t q;
          std::memcpy(&q, p + 2 * i, sizeof q);
          return static_cast<float>(q) * inv;
        },
        scale, momentum, weights, velocity);
    return;
  }
  Apply(
      [p](size_t i) {
        float g;
        std::memcpy(&g, p + i * sizeof(float), sizeof g);
        return g;
      },
      scale, momentum, weights, velocity);
}

bool AllFinite(std::span<const float> values) {
  for (float v : values) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

}  // namespace orrery::server
