// How a model's tensors are cut into chunks and which shard owns each chunk.
//
// A tensor of E elements is cut into ceil(E / chunk_size) chunks (the last may be shorter). Chunk k
// of tensor t lives on shard (Fnv1a64(t) + k) mod S: a fixed hash, identical in every build and on
// every host, that deals each tensor's chunks round-robin from a hashed starting shard. Every
// tensor is therefore spread evenly (shards differ by at most one chunk of it) and the starting
// shards of different tensors are scattered, so loads stay balanced for any model.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parameter_server.pb.h"

namespace orrery::server {

// 64-bit FNV-1a of `bytes`. Stable across builds and platforms.
uint64_t Fnv1a64(absl::string_view bytes);

struct Chunk {
  int tensor = 0;           // index into the layout's tensors
  uint32_t index = 0;       // chunk index within the tensor
  uint64_t offset = 0;      // first element in the model's flat buffer (tensors in layout order)
  uint32_t length = 0;      // elements
  uint32_t shard = 0;       // owner
};

// Immutable after Create; safe to share between threads.
class ShardPlan {
 public:
  // Validates `layout` (non-empty unique tensor names, chunk_size > 0, num_shards > 0,
  // element_count consistent with dims when dims are given) and computes every chunk.
  static absl::StatusOr<ShardPlan> Create(const proto::ModelLayout& layout);

  const proto::ModelLayout& layout() const { return layout_; }
  uint32_t num_shards() const { return layout_.num_shards(); }
  uint64_t total_elements() const { return total_elements_; }
  // All chunks, in flat-buffer order.
  const std::vector<Chunk>& chunks() const { return chunks_; }
  // Indices into chunks() of the chunks `shard` owns, in flat-buffer order.
  const std::vector<int>& ChunksOfShard(uint32_t shard) const { return by_shard_[shard]; }
  // Elements `shard` owns.
  uint64_t ShardElements(uint32_t shard) const;
  const std::string& TensorName(int tensor) const { return layout_.tensors(tensor).name(); }

  // Index into chunks() of (tensor name, chunk index), or an INVALID_ARGUMENT naming what is
  // unknown.
  absl::StatusOr<int> FindChunk(absl::string_view tensor, uint32_t index) const;

 private:
  proto::ModelLayout layout_;
  uint64_t total_elements_ = 0;
  std::vector<Chunk> chunks_;
  std::vector<std::vector<int>> by_shard_;
  absl::flat_hash_map<std::string, int> tensor_index_;
  std::vector<int> first_chunk_;  // per tensor, index of its chunk 0 in chunks_
};

// Pulls and pushes in parts (PullRequest.part/parts, PushRequest.part/parts): part `part` of
// `parts` of a shard's N chunks is [first, end) of them in flat-buffer order, with
// first = N·part/parts and end = N·(part+1)/parts. The one definition every side uses.
struct PartRange {
  size_t first = 0, end = 0;
};
inline PartRange PartOf(size_t chunks, uint32_t part, uint32_t parts) {
  if (parts <= 1) return {0, chunks};
  return {chunks * part / parts, chunks * (part + 1) / parts};
}
// How many parts of about `part_bytes` a shard's `bytes` in `chunks` chunks go in: at least 1, at
// most one per chunk; 1 when part_bytes is 0.
inline uint32_t PartCount(uint64_t bytes, size_t chunks, uint64_t part_bytes) {
  if (part_bytes == 0 || chunks <= 1) return 1;
  const uint64_t want = (bytes + part_bytes - 1) / part_bytes;
  return static_cast<uint32_t>(std::clamp<uint64_t>(want, 1, chunks));
}

// Describes the first difference between two layouts, or OK when they are identical in every
// field that matters (tensor names, element counts, dims, chunk size, shard count).
absl::Status CompareLayouts(const proto::ModelLayout& expected, const proto::ModelLayout& got);

// Reads a ModelLayout from `path`: binary protobuf when the name ends in ".pb" or ".binpb",
// text format otherwise.
absl::StatusOr<proto::ModelLayout> ReadLayoutFile(const std::string& path);

}  // namespace orrery::server
