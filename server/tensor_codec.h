// Encoding and decoding runs of floats to and from the wire's EncodedTensor payloads.
// FP32 is implemented; FIXED16 is declared in the proto and answered with UNIMPLEMENTED until the
// quant library provides it (add it here, in one place).
#pragma once

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

// True when every value is finite (no NaN, no Inf).
bool AllFinite(std::span<const float> values);

}  // namespace orrery::server
