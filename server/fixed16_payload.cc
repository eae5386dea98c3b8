#include "server/fixed16_payload.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "quant/tensor_codec.h"

namespace orrery::server {
namespace {
static_assert(std::endian::native == std::endian::little,
              "FIXED16 payloads are little-endian; add byte swapping for big-endian hosts");
}  // namespace

absl::StatusOr<quant::FixedFormat> Fixed16Format(int32_t fractional_bits) {
  if (fractional_bits < 0 || fractional_bits > quant::kMaxFractionalBits) {
    return absl::InvalidArgumentError(
        absl::StrCat("FIXED16 payload has fractional_bits ", fractional_bits, "; FL must be in [0, ",
                     quant::kMaxFractionalBits, "]"));
  }
  return quant::FixedFormat{fractional_bits};
}

absl::Status CheckFixed16Payload(int32_t fractional_bits, size_t byte_size, size_t elements) {
  absl::StatusOr<quant::FixedFormat> format = Fixed16Format(fractional_bits);
  if (!format.ok()) return format.status();
  const size_t want = quant::Fixed16EncodedSize(elements);
  if (byte_size != want) {
    return absl::InvalidArgumentError(absl::StrCat("FIXED16 payload of ", elements,
                                                   " elements must be ", want, " bytes, got ",
                                                   byte_size));
  }
  return absl::OkStatus();
}

void DecodeFixed16Payload(std::string_view bytes, quant::FixedFormat format,
                          std::span<float> out) {
  // The size was checked, so this cannot fail.
  (void)quant::DecodeFixed16(bytes, format, out);
}

void AccumulateFixed16Payload(std::string_view bytes, quant::FixedFormat format, float scale,
                              std::span<float> acc) {
  const char* p = bytes.data();
  const float inv = format.inverse_scale();
  float* a = acc.data();
  const size_t n = acc.size();
  for (size_t i = 0; i < n; ++i) {
    int16_t q;
    std::memcpy(&q, p + 2 * i, sizeof q);
    a[i] += scale * (static_cast<float>(q) * inv);
  }
}

absl::Status EncodeFixed16Payload(std::span<const float> values, quant::FixedFormat format,
                                  quant::Rounding rounding, quant::RandomStream stream,
                                  proto::EncodedTensor* out) {
  if (format.fl < 0 || format.fl > quant::kMaxFractionalBits) {
    return absl::InvalidArgumentError(absl::StrCat("FIXED16 FL must be in [0, ",
                                                   quant::kMaxFractionalBits, "], got ", format.fl));
  }
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "value ", i, " is ", values[i], "; FIXED16 cannot carry NaN or Inf"));
    }
  }
  out->set_encoding(proto::FIXED16);
  out->set_element_count(static_cast<uint32_t>(values.size()));
  out->set_fractional_bits(format.fl);
  quant::EncodeFixed16(values, format, rounding, stream, out->mutable_data());
  return absl::OkStatus();
}

}  // namespace orrery::server
