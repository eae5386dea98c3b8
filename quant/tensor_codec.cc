#include "quant/tensor_codec.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "quant/fixed_convert.h"

namespace orrery::quant {
namespace {

// Payload bytes may sit at any alignment, so words go through a small aligned buffer.
constexpr size_t kChunk = 2048;

void SwapIfBigEndian(int16_t* words, size_t n) {
  if constexpr (std::endian::native == std::endian::big) {
    for (size_t i = 0; i < n; ++i) {
      const auto u = static_cast<uint16_t>(words[i]);
      words[i] = static_cast<int16_t>(static_cast<uint16_t>((u >> 8) | (u << 8)));
    }
  } else {
    (void)words;
    (void)n;
  }
}

}  // namespace

FixedFormat ChooseFormat(std::span<const float> values) {
  return FixedFormat::WithFractionalBits(ChooseFractionalBits(MaxAbs(values)));
}

absl::Status EncodeFixed16(std::span<const float> in, FixedFormat format, Rounding rounding,
                           RandomStream stream, std::span<char> out, Isa isa) {
  if (out.size() != Fixed16EncodedSize(in.size())) {
    return absl::InvalidArgumentError(absl::StrCat("FIXED16 encode: ", in.size(), " values need ",
                                                   Fixed16EncodedSize(in.size()),
                                                   " bytes, buffer has ", out.size()));
  }
  alignas(64) int16_t words[kChunk];
  for (size_t i = 0; i < in.size(); i += kChunk) {
    const size_t n = std::min(kChunk, in.size() - i);
    absl::Status s = Quantize(in.subspan(i, n), format, rounding, stream.Advanced(i),
                              std::span<int16_t>(words, n), isa);
    if (!s.ok()) return s;
    SwapIfBigEndian(words, n);
    std::memcpy(out.data() + 2 * i, words, 2 * n);
  }
  return absl::OkStatus();
}

void EncodeFixed16(std::span<const float> in, FixedFormat format, Rounding rounding,
                   RandomStream stream, std::string* out, Isa isa) {
  out->resize(Fixed16EncodedSize(in.size()));
  // Sizes match by construction, so this cannot fail.
  (void)EncodeFixed16(in, format, rounding, stream, std::span<char>(out->data(), out->size()), isa);
}

absl::Status DecodeFixed16(std::string_view bytes, FixedFormat format, std::span<float> out,
                           Isa isa) {
  if (bytes.size() != Fixed16EncodedSize(out.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("FIXED16 decode: payload has ", bytes.size(), " bytes, expected ",
                     Fixed16EncodedSize(out.size()), " for ", out.size(), " values"));
  }
  if (format.fl < 0 || format.fl > kMaxFractionalBits) {
    return absl::InvalidArgumentError(absl::StrCat("FIXED16 decode: invalid FL ", format.fl));
  }
  alignas(64) int16_t words[kChunk];
  for (size_t i = 0; i < out.size(); i += kChunk) {
    const size_t n = std::min(kChunk, out.size() - i);
    std::memcpy(words, bytes.data() + 2 * i, 2 * n);
    SwapIfBigEndian(words, n);
    absl::Status s = Dequantize(std::span<const int16_t>(words, n), format, out.subspan(i, n), isa);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace orrery::quant
