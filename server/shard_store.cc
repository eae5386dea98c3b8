#include "server/shard_store.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/tensor_codec.h"

namespace orrery::server {

ShardStore::ShardStore(const ShardPlan* plan, uint32_t shard, float momentum,
                       std::optional<FixedWeights> fixed, bool two_cores)
    : plan_(plan), shard_(shard), momentum_(momentum), two_cores_(two_cores) {
  if (fixed.has_value()) {
    fixed_ = std::make_unique<FixedMasterWeights>(fixed->format, fixed->rounding, shard_);
  }
  owned_ = plan_->ChunksOfShard(shard_);
  local_slot_.assign(plan_->chunks().size(), -1);
  uint64_t offset = 0;
  for (size_t i = 0; i < owned_.size(); ++i) {
    local_slot_[owned_[i]] = static_cast<int>(i);
    local_offset_.push_back(offset);
    offset += plan_->chunks()[owned_[i]].length;
  }
  weights_ = std::make_shared<std::vector<float>>(offset, 0.0f);
  accumulator_.assign(offset, 0.0f);
  if (momentum_ != 0.0f) velocity_.assign(offset, 0.0f);
}

namespace {
const proto::EncodedTensor& Payload(const proto::PushChunk& c) { return c.gradient(); }
const proto::EncodedTensor& Payload(const proto::InitChunk& c) { return c.weights(); }
}  // namespace

template <typename ChunkMsg>
absl::Status ShardStore::CheckChunkRange(const google::protobuf::RepeatedPtrField<ChunkMsg>& chunks,
                                         size_t first, size_t end,
                                         std::span<const PayloadView> received,
                                         std::vector<PayloadView>* payloads) const {
  if (static_cast<size_t>(chunks.size()) != end - first) {
    return absl::InvalidArgumentError(
        end - first == owned_.size()
            ? absl::StrCat("shard ", shard_, " owns ", owned_.size(),
                           " chunks but the request carries ", chunks.size())
            : absl::StrCat("this part of the push should carry ", end - first,
                           " chunks of shard ", shard_, " but carries ", chunks.size()));
  }
  std::vector<bool> seen(end - first, false);
  if (!received.empty() && received.size() != static_cast<size_t>(chunks.size())) {
    return absl::InternalError("a received push's payloads do not match its chunks");
  }
  if (payloads != nullptr) payloads->assign(end - first, PayloadView());
  for (int k = 0; k < chunks.size(); ++k) {
    const ChunkMsg& c = chunks[k];
    auto found = plan_->FindChunk(c.id().tensor(), c.id().index());
    if (!found.ok()) return found.status();
    const int slot = local_slot_[*found];
    if (slot < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk ", c.id().tensor(), "/", c.id().index(), " belongs to shard ",
          plan_->chunks()[*found].shard, ", not shard ", shard_, "; the sender's sharding differs"));
    }
    if (static_cast<size_t>(slot) < first || static_cast<size_t>(slot) >= end) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", c.id().tensor(), "/",
                                                     c.id().index(),
                                                     " belongs to another part of the push"));
    }
    if (seen[slot - first]) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", c.id().tensor(), "/",
                                                     c.id().index(), " appears twice"));
    }
    seen[slot - first] = true;
    const uint32_t length = plan_->chunks()[*found].length;
    PayloadView payload = received.empty() ? PayloadView::Of(Payload(c)) : received[k];
    absl::Status st = CheckPayload(payload, length);
    if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat("chunk ", c.id().tensor(), "/", c.id().index(),
                                                  ": ", st.message()));
    }
    if (payloads != nullptr) (*payloads)[slot - first] = std::move(payload);
  }
  return absl::OkStatus();
}

template <typename ChunkMsg>
absl::StatusOr<std::vector<PayloadView>> ShardStore::CheckChunks(
    const google::protobuf::RepeatedPtrField<ChunkMsg>& chunks,
    std::span<const PayloadView> received) const {
  std::vector<PayloadView> payloads;
  absl::Status st = CheckChunkRange(chunks, 0, owned_.size(), received, &payloads);
  if (!st.ok()) return st;
  return payloads;
}

absl::Status ShardStore::CheckPart(absl::string_view what, uint32_t part, uint32_t parts) const {
  const size_t n = owned_.size();
  const uint32_t count = std::max<uint32_t>(1, parts);
  if (part >= count || count > std::max<size_t>(1, n)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " part ", part, " of ", count,
                                                   "; this shard's ", n, " chunks allow 1 to ",
                                                   std::max<size_t>(1, n),
                                                   " parts, numbered from 0"));
  }
  return absl::OkStatus();
}

absl::Status ShardStore::CheckChunkPart(
    const google::protobuf::RepeatedPtrField<proto::PushChunk>& chunks, uint32_t part,
    uint32_t parts, std::span<const PayloadView> received) const {
  if (absl::Status st = CheckPart("push", part, parts); !st.ok()) return st;
  const PartRange range = PartOf(owned_.size(), part, parts);
  return CheckChunkRange(chunks, range.first, range.end, received, nullptr);
}

template <typename ChunkMsg>
absl::StatusOr<std::vector<float>> ShardStore::DecodeChunks(
    const google::protobuf::RepeatedPtrField<ChunkMsg>& chunks) const {
  absl::StatusOr<std::vector<PayloadView>> payloads = CheckChunks(chunks);
  if (!payloads.ok()) return payloads.status();
  std::vector<float> out(weights_->size());
  for (size_t slot = 0; slot < owned_.size(); ++slot) {
    const uint32_t length = plan_->chunks()[owned_[slot]].length;
    absl::Status st = DecodeFloats((*payloads)[slot],
                                   std::span<float>(out.data() + local_offset_[slot], length));
    if (!st.ok()) return st;  // CheckChunks already accepted it
  }
  return out;
}

template absl::StatusOr<std::vector<float>> ShardStore::DecodeChunks(
    const google::protobuf::RepeatedPtrField<proto::PushChunk>&) const;
template absl::StatusOr<std::vector<float>> ShardStore::DecodeChunks(
    const google::protobuf::RepeatedPtrField<proto::InitChunk>&) const;
template absl::StatusOr<std::vector<PayloadView>> ShardStore::CheckChunks(
    const google::protobuf::RepeatedPtrField<proto::PushChunk>&,
    std::span<const PayloadView>) const;
template absl::StatusOr<std::vector<PayloadView>> ShardStore::CheckChunks(
    const google::protobuf::RepeatedPtrField<proto::InitChunk>&,
    std::span<const PayloadView>) const;

std::vector<float>& ShardStore::WritableWeights() {
  if (weights_.use_count() > 1) {
    weights_ = std::make_shared<std::vector<float>>(*weights_);
    ++weight_buffer_copies_;
  } else {
    // The answers that held the buffer only read it; their reads happen before these writes.
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  return *weights_;
}

void ShardStore::Initialize(std::vector<float> values) {
  weights_ = std::make_shared<std::vector<float>>(std::move(values));
  if (fixed_ != nullptr) fixed_->Initialize(*weights_);
  initialized_ = true;
}

absl::Status ShardStore::Restore(uint64_t version, std::vector<float> weights,
                                 std::vector<float> velocity, std::vector<float> accumulator) {
  const size_t owned = weights_->size();
  if (weights.size() != owned) {
    return absl::InvalidArgumentError(absl::StrCat("the checkpoint holds ", weights.size(),
                                                   " weights; this shard owns ", owned));
  }
  if (!velocity.empty() && velocity.size() != owned) {
    return absl::InvalidArgumentError(absl::StrCat("the checkpoint's momentum has ",
                                                   velocity.size(), " values, not ", owned));
  }
  if (!accumulator.empty() && accumulator.size() != owned) {
    return absl::InvalidArgumentError(absl::StrCat("the checkpoint's pending gradient has ",
                                                   accumulator.size(), " values, not ", owned));
  }
  deferred_.clear();
  weights_ = std::make_shared<std::vector<float>>(std::move(weights));
  // Fixed16 master weights: the checkpointed values are on the grid already, so this only
  // rebuilds the words (nearest rounding of grid values is exact).
  if (fixed_ != nullptr) fixed_->Initialize(*weights_);
  if (!velocity.empty()) velocity_ = std::move(velocity);
  if (accumulator.empty()) {
    std::fill(accumulator_.begin(), accumulator_.end(), 0.0f);
    accumulator_empty_ = true;
  } else {
    accumulator_ = std::move(accumulator);
    accumulator_empty_ = false;
  }
  version_ = version;
  initialized_ = true;
  return absl::OkStatus();
}

absl::Status ShardStore::InitializeFromFlat(std::span<const float> flat) {
  if (flat.size() != plan_->total_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("initial weights have ", flat.size(),
                                                   " elements but the model has ",
                                                   plan_->total_elements()));
  }
  std::vector<float> values(weights_->size());
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

void ShardStore::Accumulate(const std::vector<PayloadView>& gradient, float scale) {
  if (accumulator_empty_ && deferred_.empty() && !gradient.empty()) {
    deferred_ = gradient;
    deferred_scale_ = scale;
    return;
  }
  FlushDeferred();
  AccumulateNow(gradient, scale);
}

namespace {

// Updates of shards holding at least this many weights (2 MB) run on two threads when the shard
// may use two cores: a large update is memory-bound and one core does not draw all the memory
// bandwidth there is, and the learner that pushed waits for it. Every element gets the same
// arithmetic either way, so the weights are bit-for-bit the same. At 4 MB against one unbound
// shard two threads made the round trip about 3% faster in a hand A/B (bench_transport
// --sizes_mb=4 --shards=1 --learners= --parts_rounds=0, its --orrery alternating between builds
// with each threshold, six pairs; a thread costs tens of microseconds, the update 0.5 ms); the
// threshold was 16 MB before. A shard bound to one core (orrery server --cpus 1) keeps to one
// thread: there the second only shared the core, and the 4 MB update took 0.46-0.53 ms on two
// threads against 0.31-0.39 ms on one (timed by hand with temporary timers in the shard, three
// alternating pairs; no benchmark reports it).
constexpr size_t kTwoThreadElements = size_t{1} << 19;

// body(first, end) over [0, n), in two halves on two threads when the update touches at least
// kTwoThreadElements weights and `two_cores` (the shard may run on more than one).
template <typename Body>
void Halves(bool two_cores, size_t n, size_t elements, const Body& body) {
  if (!two_cores || elements < kTwoThreadElements || n < 2) {
    body(size_t{0}, n);
    return;
  }
  std::thread helper([&body, n] { body(n / 2, n); });
  body(size_t{0}, n / 2);
  helper.join();
}

}  // namespace

void ShardStore::AccumulateNow(const std::vector<PayloadView>& gradient, float scale) {
  Halves(two_cores_, owned_.size(), weights_->size(), [&](size_t first, size_t end) {
    for (size_t slot = first; slot < end; ++slot) {
      const uint32_t length = plan_->chunks()[owned_[slot]].length;
      AccumulatePayload(gradient[slot], scale,
                        std::span<float>(accumulator_.data() + local_offset_[slot], length));
    }
  });
  accumulator_empty_ = false;
}

void ShardStore::FlushDeferred() {
  if (deferred_.empty()) return;
  AccumulateNow(deferred_, deferred_scale_);
  deferred_.clear();
}

void ShardStore::ApplyAccumulated(int count) {
  if (!deferred_.empty() && count == 1) {
    ApplyDeferred();
  } else {
    FlushDeferred();
    ApplyAccumulator(count);
  }
  ++version_;
  if (fixed_ != nullptr) fixed_->Round(*weights_, version_);
}

void ShardStore::ApplyDeferred() {
  // The update is this one gradient g: the accumulator would hold exactly scale·g (0 + x == x)
  // and be averaged over one (x · 1 == x), so w −= scale·g (or v = μ·v + scale·g, w −= v) is the
  // same arithmetic without the accumulator's two passes.
  std::vector<float>& weights = WritableWeights();
  Halves(two_cores_, owned_.size(), weights.size(), [&](size_t first, size_t end) {
    for (size_t slot = first; slot < end; ++slot) {
      const uint32_t length = plan_->chunks()[owned_[slot]].length;
      const uint64_t offset = local_offset_[slot];
      ApplyPayload(deferred_[slot], deferred_scale_, momentum_,
                   std::span<float>(weights.data() + offset, length),
                   momentum_ != 0.0f ? std::span<float>(velocity_.data() + offset, length)
                                     : std::span<float>());
    }
  });
  deferred_.clear();
}

void ShardStore::ApplyAccumulator(int count) {
  accumulator_empty_ = true;
  const float inv = 1.0f / static_cast<float>(std::max(1, count));
  std::vector<float>& weights = WritableWeights();
  const size_t n = weights.size();
  float* w = weights.data();
  float* acc = accumulator_.data();
  float* v = velocity_.data();
  const float mu = momentum_;
  Halves(two_cores_, n, n, [=](size_t first, size_t end) {
    if (mu != 0.0f) {
      for (size_t i = first; i < end; ++i) {
        v[i] = mu * v[i] + acc[i] * inv;
        w[i] -= v[i];
        acc[i] = 0.0f;
      }
    } else {
      for (size_t i = first; i < end; ++i) {
        w[i] -= acc[i] * inv;
        acc[i] = 0.0f;
      }
    }
  });
}

proto::PullResponse PullAnswer::Materialize() const {
  proto::PullResponse out = response;
  for (size_t i = 0; i < aliased.size(); ++i) {
    const float* values = weights->data() + aliased[i].offset;
    out.mutable_chunks(static_cast<int>(i))
        ->mutable_weights()
        ->mutable_data()
        ->assign(reinterpret_cast<const char*>(values), aliased[i].length * sizeof(float));
  }
  return out;
}

absl::StatusOr<PullAnswer> ShardStore::AnswerPull(proto::Encoding encoding, uint32_t part,
                                                  uint32_t parts) const {
  const auto [first, end] = PartOf(owned_.size(), part, parts);
  PullAnswer answer;
  proto::PullResponse& out = answer.response;
  out.set_version(version_);
  out.mutable_chunks()->Reserve(static_cast<int>(end - first));
  const bool alias = encoding == proto::FP32 || encoding == proto::ENCODING_UNSPECIFIED;
  if (alias) {
    answer.weights = weights_;
    answer.aliased.reserve(end - first);
  }
  Fixed16Encoding fixed16;  // nearest, FL per chunk
  if (fixed_ != nullptr) fixed16.fl = fixed_->format().fl;  // the grid itself: exact
  for (size_t i = first; i < end; ++i) {
    const Chunk& c = plan_->chunks()[owned_[i]];
    proto::PullChunk* pc = out.add_chunks();
    pc->mutable_id()->set_tensor(plan_->TensorName(c.tensor));
    pc->mutable_id()->set_index(c.index);
    pc->set_version(version_);
    if (alias) {
      proto::EncodedTensor* t = pc->mutable_weights();
      t->set_encoding(proto::FP32);
      t->set_element_count(c.length);
      answer.aliased.push_back({local_offset_[i], c.length});
      continue;
    }
    absl::Status st = EncodeFloats(
        std::span<const float>(weights_->data() + local_offset_[i], c.length), encoding,
        pc->mutable_weights(), fixed16);
    if (!st.ok()) return st;
  }
  return answer;
}

}  // namespace orrery::server
