// FIXED16 wire payloads (proto Encoding FIXED16): a run of floats as little-endian int16 words in
// the format <16 - FL, FL>, FL carried in EncodedTensor.fractional_bits. The checks, decoding and
// accumulation tensor_codec.cc dispatches to for FIXED16, and the encoder that learners (for
// gradients, stochastic rounding) and shards (for weights) call. Built on quant/tensor_codec.h.
//
// All functions are thread-safe and never trust a payload's header: sizes and FL are checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parameter_server.pb.h"
#include "quant/counter_rng.h"
#include "quant/fixed_format.h"

namespace orrery::server {

// The format a payload header names. INVALID_ARGUMENT when fractional_bits is outside
// [0, quant::kMaxFractionalBits].
absl::StatusOr<quant::FixedFormat> Fixed16Format(int32_t fractional_bits);

// Checks a FIXED16 payload of `elements` values: FL in range and exactly 2 * elements bytes.
absl::Status CheckFixed16Payload(int32_t fractional_bits, size_t byte_size, size_t elements);

// out[i] = word[i] * 2^-FL (exact). `bytes` must have passed CheckFixed16Payload for out.size().
void DecodeFixed16Payload(std::string_view bytes, quant::FixedFormat format, std::span<float> out);

// acc[i] += scale * (word[i] * 2^-FL), the float arithmetic of decoding first. `bytes` must have
// passed CheckFixed16Payload for acc.size().
void AccumulateFixed16Payload(std::string_view bytes, quant::FixedFormat format, float scale,
                              std::span<float> acc);

// Writes `values` into `out` as FIXED16 in `format` (replacing its contents). Element i of the
// payload draws stochastic-rounding counter stream.offset + i (advance the stream by a chunk's
// start within its tensor so that chunking does not change the result). INVALID_ARGUMENT naming
// the element when a value is NaN or Inf: fixed point has no such values, and quietly sending 0
// or the largest value would hide a diverged gradient. `out` is untouched on error.
absl::Status EncodeFixed16Payload(std::span<const float> values, quant::FixedFormat format,
                                  quant::Rounding rounding, quant::RandomStream stream,
                                  proto::EncodedTensor* out);

}  // namespace orrery::server
