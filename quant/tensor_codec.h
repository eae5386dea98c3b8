// Float tensors <-> FIXED16 wire payloads: little-endian int16 words in a format <IL, FL>, as
// carried in a Push or Pull payload tagged FIXED16(IL, FL). The format travels beside the bytes;
// ChooseFormat picks it from a tensor's range when the job does not fix FL.
//
// Thread-safe and allocation-free apart from resizing a caller's std::string.
#ifndef ORRERY_QUANT_TENSOR_CODEC_H_
#define ORRERY_QUANT_TENSOR_CODEC_H_

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "quant/counter_rng.h"
#include "quant/cpu_isa.h"
#include "quant/fixed_format.h"

namespace orrery::quant {

// Bytes of a FIXED16 payload of `elements` values.
constexpr size_t Fixed16EncodedSize(size_t elements) { return 2 * elements; }

// The format with the largest FL that holds max |x| without saturating (NaNs ignored).
FixedFormat ChooseFormat(std::span<const float> values);

// Writes Fixed16EncodedSize(in.size()) bytes to `out`; element i uses draw stream.offset + i.
// Returns InvalidArgument if out has another size (then out is untouched).
absl::Status EncodeFixed16(std::span<const float> in, FixedFormat format, Rounding rounding,
                           RandomStream stream, std::span<char> out, Isa isa = Isa::kAuto);
// As above, replacing *out's contents.
void EncodeFixed16(std::span<const float> in, FixedFormat format, Rounding rounding,
                   RandomStream stream, std::string* out, Isa isa = Isa::kAuto);

// Decodes a payload into `out`. Returns InvalidArgument if bytes.size() is not
// Fixed16EncodedSize(out.size()) (a truncated or mislabelled payload); then out is untouched.
absl::Status DecodeFixed16(std::string_view bytes, FixedFormat format, std::span<float> out,
                           Isa isa = Isa::kAuto);

}  // namespace orrery::quant

#endif  // ORRERY_QUANT_TENSOR_CODEC_H_
