// Encoding and decoding runs of floats to and from the wire's EncodedTensor payloads.
// FP32 is implemented; FIXED16 is declared in the proto and answered with UNIMPLEMENTED until the
// quant library provides it (add it here, in one place).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "parameter_server.pb.h"

namespace orrery::server {

// Writes `values` into `out` (replacing its contents) in `encoding`.
absl::Status EncodeFloats(std::span<const float> values, proto::Encoding encoding,
                          proto::EncodedTensor* out);

// Decodes `in` into `out`, which must have exactly in.element_count() elements. Checks that the
// byte length matches the element count and encoding; never trusts the peer.
absl::Status DecodeFloats(const proto::EncodedTensor& in, std::span<float> out);

// Checks what DecodeFloats checks (element count, encoding, byte length) without decoding.
absl::Status CheckPayload(const proto::EncodedTensor& in, size_t elements);
// The same check on a payload's header fields and byte length (for decoders that read the wire
// format directly).
absl::Status CheckPayloadHeader(proto::Encoding encoding, uint64_t element_count,
                                size_t byte_size, size_t elements);

// True when every value `in` encodes is finite. `in` must have passed CheckPayload.
bool PayloadAllFinite(const proto::EncodedTensor& in);

// acc[i] += scale · value[i] for the acc.size() values `in` encodes, with exactly the float
// arithmetic of decoding first. `in` must have passed CheckPayload(in, acc.size()).
void AccumulatePayload(const proto::EncodedTensor& in, float scale, std::span<float> acc);

// One gradient-descent step from the values g that `in` encodes: with `velocity` empty,
// w[i] −= scale·g[i]; otherwise v[i] = momentum·v[i] + scale·g[i], w[i] −= v[i]. `in` must have
// passed CheckPayload(in, weights.size()); velocity is empty or as long as weights.
void ApplyPayload(const proto::EncodedTensor& in, float scale, float momentum,
                  std::span<float> weights, std::span<float> velocity);

// True when every value is finite (no NaN, no Inf).
bool AllFinite(std::span<const float> values);

}  // namespace orrery::server
