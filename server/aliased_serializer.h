// Serialises a protobuf message into a grpc::ByteBuffer without copying its large `bytes` fields:
// the buffer's slices point into the message, which they keep alive. The bytes on the wire are
// exactly what the message's own serialisation produces, so any protobuf peer parses them.
// Used for FIXED16 Push requests and Pull responses (the payload is copied once, into the
// message, instead of a second time into the serialised buffer); FP32 Pull responses
// (SerializePullAnswer) and Push requests (SerializeWithAliasedChunks) are not copied at all.
#pragma once

#include <memory>
#include <span>

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

// One element of a repeated chunk field whose tensor's payload lives elsewhere: the chunk's
// fields but the tensor (`head`), the tensor's field number in the chunk, the tensor's fields
// but its data (`tensor`, an EncodedTensor), and the data: `bytes` at `data`.
struct AliasedChunk {
  const google::protobuf::MessageLite* head = nullptr;
  int tensor_field = 0;
  const google::protobuf::MessageLite* tensor = nullptr;
  const void* data = nullptr;
  size_t bytes = 0;
};

// The bytes of a message made of `head` (every field but the chunks) followed by `chunks` as its
// repeated field `chunks_field`, with each chunk's payload as a slice pointing at its data
// instead of a copy (those of 4 KB or more); every slice keeps `owner` alive. Any protobuf peer
// parses the bytes as that message (fields after `chunks_field` in `head` come before it, which
// protobuf accepts). Only `owner` needs to outlive the call. Empty and invalid when the message
// would be 2 GiB or larger. Field numbers must be below 16.
grpc::ByteBuffer SerializeWithAliasedChunks(const google::protobuf::MessageLite& head, int chunks_field,
                                            std::span<const AliasedChunk> chunks, std::shared_ptr<const void> owner);

}  // namespace orrery::server
