// Encoding and decoding runs of floats to and from the wire's EncodedTensor payloads, in one
// place for every encoding: FP32 (little-endian float32) and FIXED16 (little-endian int16 words in
// <16 - FL, FL>, FL in EncodedTensor.fractional_bits; the FIXED16 work is server/fixed16_payload).
//
// All functions are thread-safe. Nothing here trusts a payload's header: the Check functions
// validate encoding, element count, FL and byte length, and the others require a checked payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "parameter_server.pb.h"
#include "quant/counter_rng.h"
#include "quant/fixed_format.h"

namespace orrery::server {

// The largest FL the wire uses when it chooses one itself.
inline constexpr int kMaxWireFractionalBits = 15;

// The FL a FIXED16 payload of `values` gets when none is fixed: the smallest IL whose range holds
// max |x| without saturating, FL = 16 - IL, capped to [0, kMaxWireFractionalBits] (so IL >= 1:
// values below 1 in magnitude get FL 15, eps = 2^-15; values beyond 32767 saturate at FL 0).
// NaNs are ignored.
int WireFractionalBits(std::span<const float> values);

// How EncodeFloats writes FIXED16 (ignored for FP32).
struct Fixed16Encoding {
  std::optional<int> fl;  // unset: WireFractionalBits(values), per encoded run (chunk)
  quant::Rounding rounding = quant::Rounding::kNearest;
  // Stochastic rounding: element i of the run draws stream.offset + i.
  quant::RandomStream stream;
};

// Writes `values` into `out` (replacing its contents) in `encoding`. FIXED16: INVALID_ARGUMENT
// when a value is NaN or Inf or the FL is outside [0, quant::kMaxFractionalBits]; `out` is then
// untouched.
absl::Status EncodeFloats(std::span<const float> values, proto::Encoding encoding,
                          proto::EncodedTensor* out, const Fixed16Encoding& fixed16 = {});

// Decodes `in` into `out`, which must have exactly in.element_count() elements. Checks that the
// byte length matches the element count and encoding; never trusts the peer.
absl::Status DecodeFloats(const proto::EncodedTensor& in, std::span<float> out);

// Checks what DecodeFloats checks (element count, encoding, FL, byte length) without decoding.
// INVALID_ARGUMENT saying what is wrong.
absl::Status CheckPayload(const proto::EncodedTensor& in, size_t elements);
// The same check on a payload's header fields and byte length (for decoders that read the wire
// format directly). `fractional_bits` is read for FIXED16 only.
absl::Status CheckPayloadHeader(proto::Encoding encoding, int32_t fractional_bits,
                                uint64_t element_count, size_t byte_size, size_t elements);

// A payload whose bytes may lie in several pieces: a message received over gRPC arrives in
// slices, and a payload read from it without copying (server/push_decoder.h) may straddle them.
// The pieces point into memory that someone else keeps alive; an element may be split between
// two pieces. The functions below taking a PayloadView do exactly what their EncodedTensor
// versions do with the concatenated bytes.
struct PayloadView {
  proto::Encoding encoding = proto::ENCODING_UNSPECIFIED;
  int32_t fractional_bits = 0;
  uint64_t element_count = 0;
  absl::InlinedVector<absl::string_view, 1> pieces;

  // `t`'s header and its data as one piece (`t` must outlive the view).
  static PayloadView Of(const proto::EncodedTensor& t);
  size_t byte_size() const;
};

absl::Status CheckPayload(const PayloadView& in, size_t elements);
absl::Status DecodeFloats(const PayloadView& in, std::span<float> out);

// True when every value `in` encodes is finite (always, for FIXED16). `in` must have passed
// CheckPayload.
bool PayloadAllFinite(const proto::EncodedTensor& in);
bool PayloadAllFinite(const PayloadView& in);

// acc[i] += scale · value[i] for the acc.size() values `in` encodes, with exactly the float
// arithmetic of decoding first. `in` must have passed CheckPayload(in, acc.size()).
void AccumulatePayload(const proto::EncodedTensor& in, float scale, std::span<float> acc);
void AccumulatePayload(const PayloadView& in, float scale, std::span<float> acc);

// One gradient-descent step from the values g that `in` encodes: with `velocity` empty,
// w[i] −= scale·g[i]; otherwise v[i] = momentum·v[i] + scale·g[i], w[i] −= v[i]. `in` must have
// passed CheckPayload(in, weights.size()); velocity is empty or as long as weights.
void ApplyPayload(const proto::EncodedTensor& in, float scale, float momentum,
                  std::span<float> weights, std::span<float> velocity);
void ApplyPayload(const PayloadView& in, float scale, float momentum, std::span<float> weights,
                  std::span<float> velocity);

// True when every value is finite (no NaN, no Inf).
bool AllFinite(std::span<const float> values);

}  // namespace orrery::server
