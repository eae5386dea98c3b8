// Reads a serialised PushRequest without copying its gradient payloads: the shard's push streams
// receive a push as gRPC slices, and protobuf's own parse would copy every payload into a string
// only for the shard to read it once more (to check it for NaN/Inf) and once more (to apply it).
// Here every field but the payloads is parsed by protobuf itself (so the request is exactly what
// ParseFromString would give), and each chunk's gradient bytes are left where they are, as pieces
// of the input's buffers (a PayloadView, server/tensor_codec.h).
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/io/zero_copy_stream.h"
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

// Decodes the serialised PushRequest `in` holds (to its end). The payloads point into the
// buffers `in` hands out, which `keep` must keep alive (for a grpc::ProtoBufferReader: the
// ByteBuffer and the reader). INVALID_ARGUMENT when the bytes are not a PushRequest: exactly
// when protobuf's ParseFromString refuses them (UTF-8 strings included).
absl::StatusOr<ReceivedPush> DecodePushRequest(google::protobuf::io::ZeroCopyInputStream* in,
                                               std::shared_ptr<const void> keep);

}  // namespace orrery::server
