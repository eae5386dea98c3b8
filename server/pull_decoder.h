// Decodes one shard's PullResponse from the wire straight into the learner's flat weight buffer,
// without materialising the message: each chunk's payload is copied once, from the received
// bytes to its place in the buffer. Checks everything PsClient::Pull checked on the parsed
// message (chunk count, ownership, duplicates, element counts, encoding, sizes) and never trusts
// the bytes: malformed input is an error, not a crash.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "google/protobuf/io/zero_copy_stream.h"
#include "server/sharding.h"

namespace orrery::server {

// Reads the serialised PullResponse of shard `shard` from `in` (to its end). Writes each chunk's
// weights into `weights` (the model's flat buffer) and its version into `chunk_versions` (one
// per plan chunk). On error, both may have been partly written. Shards write disjoint ranges, so
// several shards' responses may be decoded concurrently into the same buffers.
absl::Status DecodePullResponse(google::protobuf::io::ZeroCopyInputStream* in,
                                const ShardPlan& plan, uint32_t shard, std::span<float> weights,
                                std::span<uint64_t> chunk_versions);

// The same for the answer to one part of a pull (PullRequest.part/parts): it must hold exactly
// the chunks `expected` (indices into plan.chunks(), all of shard `shard`), in any order.
absl::Status DecodePullResponsePart(google::protobuf::io::ZeroCopyInputStream* in,
                                    const ShardPlan& plan, uint32_t shard,
                                    std::span<const int> expected, std::span<float> weights,
                                    std::span<uint64_t> chunk_versions);

}  // namespace orrery::server
