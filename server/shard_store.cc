#include "server/shard_store.h"

#include "absl/strings/str_cat.h"
#include "server/tensor_codec.h"

namespace orrery::server {

ShardStore::ShardStore(const ShardPlan* plan, uint32_t shard, float momentum)
    : plan_(plan), shard_(shard), momentum_(momentum) {
  owned_ = plan_->ChunksOfShard(shard_);
  local_slot_.assign(plan_->chunks().size(), -1);
  uint64_t offset = 0;
  for (size_t i = 0; i < owned_.size(); ++i) {
    local_slot_[owned_[i]] = static_cast<int>(i);
    local_offset_.push_back(offset);
    offset += plan_->chunks()[owned_[i]].length;
  }
  weights_.assign(offset, 0.0f);
  accumulator_.assign(offset, 0.0f);
  if (momentum_ != 0.0f) velocity_.assign(offset, 0.0f);
}

namespace {
const proto::EncodedTensor& Payload(const proto::PushChunk& c) { return c.gradient(); }
const proto::EncodedTensor& Payload(const proto::InitChunk& c) { return c.weights(); }
}  // namespace

template <typename ChunkMsg>
absl::StatusOr<std::vector<float>> ShardStore::DecodeChunks(
    const google::protobuf::RepeatedPtrField<ChunkMsg>& chunks) const {
  if (static_cast<size_t>(chunks.size()) != owned_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("shard ", shard_, " owns ", owned_.size(),
                                                   " chunks but the request carries ",
                                                   chunks.size()));
  }
  std::vector<float> out(weights_.size());
  std::vector<bool> seen(owned_.size(), false);
  for (const ChunkMsg& c : chunks) {
    auto found = plan_->FindChunk(c.id().tensor(), c.id().index());
    if (!found.ok()) return found.status();
    const int slot = local_slot_[*found];
    if (slot < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk ", c.id().tensor(), "/", c.id().index(), " belongs to shard ",
          plan_->chunks()[*found].shard, ", not shard ", shard_, "; the sender's sharding differs"));
    }
    if (seen[slot]) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", c.id().tensor(), "/",
                                                     c.id().index(), " appears twice"));
    }
    seen[slot] = true;
    const uint32_t length = plan_->chunks()[*found].length;
    absl::Status st =
        DecodeFloats(Payload(c), std::span<float>(out.data() + local_offset_[slot], length));
    if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat("chunk ", c.id().tensor(), "/", c.id().index(),
                                                  ": ", st.message()));
    }
  }
  return out;
}

template absl::StatusOr<std::vector<float>> ShardStore::DecodeChunks(
    const google::protobuf::RepeatedPtrField<proto::PushChunk>&) const;
template absl::StatusOr<std::vector<float>> ShardStore::DecodeChunks(
    const google::protobuf::RepeatedPtrField<proto::InitChunk>&) const;

void ShardStore::Initialize(std::vector<float> values) {
  weights_ = std::move(values);
  initialized_ = true;
}

absl::Status ShardStore::InitializeFromFlat(std::span<const float> flat) {
  if (flat.size() != plan_->total_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("initial weights have ", flat.size(),
                                                   " elements but the model has ",
                                                   plan_->total_elements()));
  }
  std::vector<float> values(weights_.size());
  for (size_t i = 0; i < owned_.size(); ++i) {
    const Chunk& c = plan_->chunks()[owned_[i]];
    std::copy_n(flat.begin() + static_cast<ptrdiff_t>(c.offset), c.length,
                values.begin() + static_cast<ptrdiff_t>(local_offset_[i]));
  }
  if (!AllFinite(values)) {
    return absl::InvalidArgumentError("initial weights contain NaN or Inf");
  }
  Initialize(std::move(values));
  return absl::OkStatus();
}

void ShardStore::Accumulate(std::span<const float> gradient, float scale) {
  float* acc = accumulator_.data();
  const size_t n = accumulator_.size();
  for (size_t i = 0; i < n; ++i) acc[i] += scale * gradient[i];
}

void ShardStore::ApplyAccumulated(int count) {
  const float inv = 1.0f / static_cast<float>(std::max(1, count));
  const size_t n = weights_.size();
  float* w = weights_.data();
  float* acc = accumulator_.data();
  if (momentum_ != 0.0f) {
    float* v = velocity_.data();
    for (size_t i = 0; i < n; ++i) {
      v[i] = momentum_ * v[i] + acc[i] * inv;
      w[i] -= v[i];
      acc[i] = 0.0f;
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      w[i] -= acc[i] * inv;
      acc[i] = 0.0f;
    }
  }
  ++version_;
}

absl::Status ShardStore::FillPull(proto::Encoding encoding, proto::PullResponse* out) const {
  out->set_version(version_);
  out->mutable_chunks()->Reserve(static_cast<int>(owned_.size()));
  for (size_t i = 0; i < owned_.size(); ++i) {
    const Chunk& c = plan_->chunks()[owned_[i]];
    proto::PullChunk* pc = out->add_chunks();
    pc->mutable_id()->set_tensor(plan_->TensorName(c.tensor));
    pc->mutable_id()->set_index(c.index);
    pc->set_version(version_);
    absl::Status st = EncodeFloats(
        std::span<const float>(weights_.data() + local_offset_[i], c.length), encoding,
        pc->mutable_weights());
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace orrery::server
