// Serialises a protobuf message into a grpc::ByteBuffer without copying its large `bytes` fields:
// the buffer's slices point into the message, which they keep alive. The bytes on the wire are
// exactly what the message's own serialisation produces, so any protobuf peer parses them.
// Used for the multi-megabyte Push requests and FIXED16 Pull responses (the payload is copied
// once, into the message, instead of a second time into the serialised buffer); FP32 Pull
// responses are not copied at all (SerializePullAnswer).
#pragma once

#include <memory>

#include <grpcpp/support/byte_buffer.h>

#include "google/protobuf/message_lite.h"
#include "server/shard_store.h"

namespace orrery::server {

// Thread-safe for distinct messages. The message must not be modified afterwards (the returned
// buffer and any copies of it share its bytes; the last of them to go releases `message`).
// Returns an empty, invalid buffer when the message is 2 GiB or larger.
grpc::ByteBuffer SerializeAliased(std::shared_ptr<const google::protobuf::MessageLite> message);

// The bytes of answer.Materialize() (a PullResponse), with the aliased payloads' slices pointing
// into answer.weights instead of copies: a pull's weights are copied only by the kernel. The
// buffer keeps `answer` alive. Empty and invalid when the response is 2 GiB or larger.
grpc::ByteBuffer SerializePullAnswer(std::shared_ptr<const PullAnswer> answer);

}  // namespace orrery::server
