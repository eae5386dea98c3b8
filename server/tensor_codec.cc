#include "server/tensor_codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "base/multiversion.h"
#include "server/fixed16_payload.h"

namespace orrery::server {
namespace {
static_assert(std::endian::native == std::endian::little,
              "FP32 payloads are little-endian; add byte swapping for big-endian hosts");

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

PayloadView PayloadView::Of(const proto::EncodedTensor& t) {
  PayloadView v;
  v.encoding = t.encoding();
  v.fractional_bits = t.fractional_bits();
  v.element_count = t.element_count();
  v.pieces.push_back(t.data());
  return v;
}

size_t PayloadView::byte_size() const {
  size_t n = 0;
  for (absl::string_view p : pieces) n += p.size();
  return n;
}

absl::Status CheckPayload(const PayloadView& in, size_t elements) {
  return CheckPayloadHeader(in.encoding, in.fractional_bits, in.element_count, in.byte_size(),
                            elements);
}

namespace {

// Calls run(bytes, first, count) over consecutive runs of whole elements of `size` bytes, in
// order: `count` elements starting with element `first`, at `bytes`. An element split between
// two pieces is put together in a local buffer and given as a run of one.
template <typename Run>
void ForEachRun(const PayloadView& in, size_t size, Run run) {
  char split[sizeof(float)];
  size_t have = 0;  // bytes of a split element gathered so far
  size_t index = 0;
  for (absl::string_view piece : in.pieces) {
    const char* p = piece.data();
    size_t left = piece.size();
    if (have > 0) {
      const size_t take = std::min(size - have, left);
      std::memcpy(split + have, p, take);
      have += take;
      p += take;
      left -= take;
      if (have < size) continue;
      run(static_cast<const char*>(split), index, size_t{1});
      ++index;
      have = 0;
    }
    const size_t whole = left / size;
    if (whole > 0) run(p, index, whole);
    index += whole;
    p += whole * size;
    left -= whole * size;
    if (left > 0) {
      std::memcpy(split, p, left);
      have = left;
    }
  }
}

size_t ElementBytes(const PayloadView& in) {
  return in.encoding == proto::FIXED16 ? sizeof(int16_t) : sizeof(float);
}

// The update of ApplyPayload over one contiguous run of FP32 or FIXED16 bytes. The shard's loops
// here are multiversioned (base/multiversion.h): the same arithmetic, wider vectors.
ORRERY_MULTIVERSION void ApplyRun(const char* p, proto::Encoding encoding, float inv, float scale, float momentum,
              std::span<float> weights, std::span<float> velocity) {
  if (encoding == proto::FIXED16) {
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

ORRERY_MULTIVERSION bool AllFiniteBytes(const char* p, size_t n) {
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

ORRERY_MULTIVERSION void AccumulateFloatBytes(const char* p, float scale, std::span<float> acc) {
  float* a = acc.data();
  const size_t n = acc.size();
  for (size_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, p + i * sizeof(float), sizeof v);
    a[i] += scale * v;
  }
}

}  // namespace

absl::Status DecodeFloats(const proto::EncodedTensor& in, std::span<float> out) {
  return DecodeFloats(PayloadView::Of(in), out);
}

absl::Status DecodeFloats(const PayloadView& in, std::span<float> out) {
  absl::Status st = CheckPayload(in, out.size());
  if (!st.ok()) return st;
  const quant::FixedFormat format{in.fractional_bits};
  const bool fixed = in.encoding == proto::FIXED16;
  ForEachRun(in, ElementBytes(in), [&](const char* p, size_t first, size_t count) {
    if (fixed) {
      DecodeFixed16Payload(std::string_view(p, count * sizeof(int16_t)), format,
                           out.subspan(first, count));
    } else {
      std::memcpy(out.data() + first, p, count * sizeof(float));
    }
  });
  return absl::OkStatus();
}

bool PayloadAllFinite(const proto::EncodedTensor& in) {
  return PayloadAllFinite(PayloadView::Of(in));
}

bool PayloadAllFinite(const PayloadView& in) {
  if (in.encoding == proto::FIXED16) return true;
  bool finite = true;
  ForEachRun(in, sizeof(float), [&](const char* p, size_t, size_t count) {
    finite = AllFiniteBytes(p, count) && finite;
  });
  return finite;
}

void AccumulatePayload(const proto::EncodedTensor& in, float scale, std::span<float> acc) {
  AccumulatePayload(PayloadView::Of(in), scale, acc);
}

void AccumulatePayload(const PayloadView& in, float scale, std::span<float> acc) {
  const quant::FixedFormat format{in.fractional_bits};
  const bool fixed = in.encoding == proto::FIXED16;
  ForEachRun(in, ElementBytes(in), [&](const char* p, size_t first, size_t count) {
    if (fixed) {
      AccumulateFixed16Payload(std::string_view(p, count * sizeof(int16_t)), format, scale,
                               acc.subspan(first, count));
    } else {
      AccumulateFloatBytes(p, scale, acc.subspan(first, count));
    }
  });
}

void ApplyPayload(const proto::EncodedTensor& in, float scale, float momentum,
                  std::span<float> weights, std::span<float> velocity) {
  ApplyPayload(PayloadView::Of(in), scale, momentum, weights, velocity);
}

void ApplyPayload(const PayloadView& in, float scale, float momentum, std::span<float> weights,
                  std::span<float> velocity) {
  const float inv = in.encoding == proto::FIXED16
                        ? quant::FixedFormat{in.fractional_bits}.inverse_scale()
                        : 1.0f;
  ForEachRun(in, ElementBytes(in), [&](const char* p, size_t first, size_t count) {
    ApplyRun(p, in.encoding, inv, scale, momentum, weights.subspan(first, count),
             velocity.empty() ? velocity : velocity.subspan(first, count));
  });
}

bool AllFinite(std::span<const float> values) {
  for (float v : values) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

}  // namespace orrery::server
