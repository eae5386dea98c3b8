#include "server/tensor_codec.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace orrery::server {
namespace {
static_assert(std::endian::native == std::endian::little,
              "FP32 payloads are little-endian; add byte swapping for big-endian hosts");
}  // namespace

absl::Status EncodeFloats(std::span<const float> values, proto::Encoding encoding,
                          proto::EncodedTensor* out) {
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
    default:
      return absl::UnimplementedError(absl::StrCat(
          "encoding ", proto::Encoding_Name(encoding), " is not supported yet; use FP32"));
  }
}

absl::Status CheckPayloadHeader(proto::Encoding encoding, uint64_t element_count,
                                size_t byte_size, size_t elements) {
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
    case proto::ENCODING_UNSPECIFIED:
      return absl::InvalidArgumentError("payload has no encoding set; use FP32");
    default:
      return absl::UnimplementedError(absl::StrCat(
          "encoding ", proto::Encoding_Name(encoding), " is not supported yet; use FP32"));
  }
}

absl::Status CheckPayload(const proto::EncodedTensor& in, size_t elements) {
  return CheckPayloadHeader(in.encoding(), in.element_count(), in.data().size(), elements);
}

absl::Status DecodeFloats(const proto::EncodedTensor& in, std::span<float> out) {
  absl::Status st = CheckPayload(in, out.size());
  if (!st.ok()) return st;
  if (!out.empty()) std::memcpy(out.data(), in.data().data(), out.size() * sizeof(float));
  return absl::OkStatus();
}

bool PayloadAllFinite(const proto::EncodedTensor& in) {
  // FP32 is the only encoding CheckPayload accepts.
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
  float* w = weights.data();
  const size_t n = weights.size();
  if (velocity.empty()) {
    for (size_t i = 0; i < n; ++i) {
      float g;
      std::memcpy(&g, p + i * sizeof(float), sizeof g);
      w[i] -= scale * g;
    }
    return;
  }
  float* v = velocity.data();
  for (size_t i = 0; i < n; ++i) {
    float g;
    std::memcpy(&g, p + i * sizeof(float), sizeof g);
    v[i] = momentum * v[i] + scale * g;
    w[i] -= v[i];
  }
}

bool AllFinite(std::span<const float> values) {
  for (float v : values) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

}  // namespace orrery::server
