// Reads a serialised PushRequest without copying its gradient payloads: the shard's push streams
// receive a push as gRPC slices, and protobuf's own parse would copy every payload into a string
// only for the shard to read it once more (to check it for NaN/Inf) and once more (to apply it).
// Here every field but the payloads is parsed by protobuf itself (so the request is exactly what
// ParseFromString would give), and each chunk's gradient bytes are left where they are, as pieces
// of the received slices (a PayloadView, server/tensor_codec.h).
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "parameter_server.pb.h"
#include "server/tensor_codec.h"

namespace orrery::server {

// A push as received. `request` holds every field; the gradients' `data` are empty when
// `payloads` is set, and then payloads[i] is chunk i's gradient (header and bytes). `keep` owns
// the memory the payloads point into. Without payloads (a push parsed by protobuf, or built in a
// test) every gradient is in `request`.
struct ReceivedPush {
  proto::PushRequest request;
  std::vector<PayloadView> payloads;
  std::shared_ptr<const void> keep;

  // Chunk i's gradient, wherever it is.
  PayloadView Payload(int i) const;
  // The request with the payloads copied in.
  proto::PushRequest Materialize() const;
};

// Decodes the bytes `pieces` (in order; the message is their concatenation), which `keep` keeps
// alive. INVALID_ARGUMENT when they are not a PushRequest (the message protobuf would give; with
// the same checks, UTF-8 strings included).
absl::StatusOr<ReceivedPush> DecodePushRequest(std::span<const absl::string_view> pieces,
                                               std::shared_ptr<const void> keep);

}  // namespace orrery::server
