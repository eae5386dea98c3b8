// One shard's parameters: the weights of the chunks it owns, the update count (version), the
// gradient accumulator of the update being collected and the optional momentum buffer.
//
// The sign convention is gradient descent: pushed values are dL/dw and an update subtracts them.
// An update applies u = (1/c)·Σ αᵢ·gᵢ over the c gradients collected, then v ← μ·v + u, w ← w − v
// (with μ = 0 this is w ← w − u).
//
// With fixed16 master weights (precision.weights: fixed16) the weights live on the grid of
// <16 − FL, FL>: the initial weights are rounded to nearest, and after each update the result is
// rounded back onto the grid (stochastically, by default, drawing from a stream keyed by the shard
// and the new version), so an update smaller than eps = 2^−FL survives in expectation. The
// accumulator and the momentum buffer stay in float.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "parameter_server.pb.h"
#include "quant/fixed_format.h"
#include "server/fixed_master_weights.h"
#include "server/sharding.h"
#include "server/tensor_codec.h"

namespace orrery::server {

// A pull's answer before serialisation (ShardStore::AnswerPull). FP32 payloads are not copied out
// of the weights: `response` holds every other field, those chunks' `weights.data` is left empty,
// and `aliased[i]` says where in `weights` chunk i's values are. The store never writes a buffer
// an answer still holds (an update then writes a new one), so the answer stays what it was at
// the pull's version for as long as it lives, without the lock.
struct PullAnswer {
  struct Span {
    uint64_t offset = 0;  // in `weights`
    uint32_t length = 0;  // elements
  };
  proto::PullResponse response;
  std::shared_ptr<const std::vector<float>> weights;  // null: every payload is in `response`
  std::vector<Span> aliased;  // empty, or one per response chunk (weights non-null)

  // The PullResponse this answer stands for, the aliased payloads copied in.
  proto::PullResponse Materialize() const;
};

// Master weights in 16-bit fixed point.
struct FixedWeights {
  quant::FixedFormat format;
  quant::Rounding rounding = quant::Rounding::kStochastic;
};

// Not thread-safe; ParameterShard locks. `plan` must outlive the store. `fixed` unset: float
// weights; set: fixed16 master weights in that format (format.fl in [0, kMaxFractionalBits]).
// `two_cores`: the process can keep two cores busy (UsableCpuCount() >= 2, which ParameterShard
// reads once): large updates then run on two threads (shard_store.cc).
class ShardStore {
 public:
  ShardStore(const ShardPlan* plan, uint32_t shard, float momentum,
             std::optional<FixedWeights> fixed = std::nullopt, bool two_cores = false);

  uint32_t shard() const { return shard_; }
  uint64_t version() const { return version_; }
  bool initialized() const { return initialized_; }
  size_t num_chunks() const { return owned_.size(); }
  uint64_t num_elements() const { return weights_->size(); }

  // Decodes `chunks` (each of this shard's chunks exactly once, any order) into one buffer in this
  // shard's chunk order. INVALID_ARGUMENT naming the chunk for: wrong count, unknown tensor or
  // chunk, a chunk another shard owns, a duplicate, a wrong element count or payload size, an
  // unsupported encoding. Changes nothing.
  template <typename ChunkMsg>
  absl::StatusOr<std::vector<float>> DecodeChunks(
      const google::protobuf::RepeatedPtrField<ChunkMsg>& chunks) const;
  // The checks of DecodeChunks without decoding: the payload of each owned chunk, in this
  // shard's chunk order. `received`, when not empty, holds chunk k's payload at k (a push read
  // without copying its payloads, server/push_decoder.h); otherwise the payloads are the chunks'
  // own. The payloads point into `chunks` (or `received`'s memory), which must outlive them.
  template <typename ChunkMsg>
  absl::StatusOr<std::vector<PayloadView>> CheckChunks(
      const google::protobuf::RepeatedPtrField<ChunkMsg>& chunks,
      std::span<const PayloadView> received = {}) const;
  // The checks of CheckChunks for part `part` of `parts` of a push (PushRequest.part/parts): the
  // chunks must be exactly this shard's chunks [part*N/parts, (part+1)*N/parts). INVALID_ARGUMENT
  // also when part >= parts or parts > max(1, N).
  absl::Status CheckChunkPart(const google::protobuf::RepeatedPtrField<proto::PushChunk>& chunks,
                              uint32_t part, uint32_t parts,
                              std::span<const PayloadView> received = {}) const;
  // INVALID_ARGUMENT, naming `what` ("push", "pull asks for"), unless part < parts <= max(1, N)
  // (parts 0 counts as 1).
  absl::Status CheckPart(absl::string_view what, uint32_t part, uint32_t parts) const;

  // Sets the initial weights (`values` in this shard's chunk order; with fixed16 weights, rounded
  // to nearest on the grid). Version stays 0.
  void Initialize(std::vector<float> values);
  // Puts back a checkpointed state (server/checkpoint.h): every vector in this shard's chunk
  // order, velocity empty or as long as weights (empty when momentum is 0), accumulator empty or
  // as long as weights. INVALID_ARGUMENT naming the mismatch; changes nothing then.
  absl::Status Restore(uint64_t version, std::vector<float> weights, std::vector<float> velocity,
                       std::vector<float> accumulator);
  // Copies this shard's chunks out of the model's flat buffer (all tensors in layout order).
  absl::Status InitializeFromFlat(std::span<const float> flat);

  // accumulator += scale · gradient, the gradient given as CheckChunks returned it; decoded
  // straight from the payloads into the accumulator. When the accumulator is empty the gradient
  // is only remembered (the payloads must stay alive until FlushDeferred or ApplyAccumulated), so
  // that an update of this one gradient reads it once instead of through the accumulator.
  void Accumulate(const std::vector<PayloadView>& gradient, float scale);
  // Adds a remembered gradient to the accumulator. Call before the payloads given to Accumulate
  // go away; a no-op when there is none.
  void FlushDeferred();
  // Applies the accumulator averaged over `count` gradients and clears it; version += 1; with
  // fixed16 weights, rounds the result onto the grid. Bit-for-bit the same weights whether or
  // not the gradient was remembered.
  void ApplyAccumulated(int count);

  // Every owned chunk, encoded in `encoding`, with the current version. FP32 payloads are aliased
  // (see PullAnswer), not copied. FIXED16 rounds to nearest with FL chosen per chunk from its
  // range; with fixed16 weights it sends them exactly, in their own FL. With parts > 1, only part
  // `part` of the owned chunks: [part*N/parts, (part+1)*N/parts) in this shard's chunk order (the
  // caller checks part < parts <= max(1, N)).
  absl::StatusOr<PullAnswer> AnswerPull(proto::Encoding encoding, uint32_t part = 0,
                                        uint32_t parts = 1) const;

  const std::vector<float>& weights() const { return *weights_; }
  // Updates that found the weights still held by a pull answer and wrote a new buffer.
  uint64_t weight_buffer_copies() const { return weight_buffer_copies_; }
  // Excludes a gradient still remembered by Accumulate (see FlushDeferred).
  const std::vector<float>& accumulator() const { return accumulator_; }
  const std::vector<float>& velocity() const { return velocity_; }
  // The fixed16 master weights (null with float weights); weights() holds their values.
  const FixedMasterWeights* fixed_weights() const { return fixed_.get(); }

 private:
  const ShardPlan* plan_;
  uint32_t shard_;
  float momentum_;
  bool two_cores_;  // large updates on two threads
  std::vector<int> owned_;            // plan chunk indices, in flat order
  std::vector<uint64_t> local_offset_;  // per owned chunk, offset in weights_
  std::vector<int> local_slot_;       // per plan chunk, index in owned_ or -1
  // Shared with the pull answers that alias it; written only when no answer holds it
  // (WritableWeights).
  std::shared_ptr<std::vector<float>> weights_;
  uint64_t weight_buffer_copies_ = 0;
  std::vector<float> accumulator_;
  std::vector<float> velocity_;
  std::unique_ptr<FixedMasterWeights> fixed_;  // null: float weights
  uint64_t version_ = 0;
  bool initialized_ = false;
  bool accumulator_empty_ = true;
  std::vector<PayloadView> deferred_;  // empty: nothing remembered
  float deferred_scale_ = 0.0f;

  // CheckChunks over the owned chunks [first, end) (slots in this shard's chunk order); fills
  // `payloads` (end - first entries, by slot - first) when not null.
  template <typename ChunkMsg>
  absl::Status CheckChunkRange(const google::protobuf::RepeatedPtrField<ChunkMsg>& chunks,
                               size_t first, size_t end, std::span<const PayloadView> received,
                               std::vector<PayloadView>* payloads) const;
  // The weights, for writing: a copy of them first when a pull answer still holds the buffer.
  std::vector<float>& WritableWeights();
  void AccumulateNow(const std::vector<PayloadView>& gradient, float scale);
  // The two ways ApplyAccumulated updates the weights (it then advances the version).
  void ApplyDeferred();
  void ApplyAccumulator(int count);
};

}  // namespace orrery::server
