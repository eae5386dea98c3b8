#include "server/sharding.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/job_limits.h"
#include "base/quote.h"
#include "google/protobuf/text_format.h"

namespace orrery::server {

uint64_t Fnv1a64(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

absl::StatusOr<ShardPlan> ShardPlan::Create(const proto::ModelLayout& layout) {
  if (layout.chunk_size() == 0) {
    return absl::InvalidArgumentError("model layout has chunk_size 0; it must be positive");
  }
  if (layout.num_shards() == 0) {
    return absl::InvalidArgumentError("model layout has num_shards 0; it must be positive");
  }
  if (layout.tensors_size() == 0) {
    return absl::InvalidArgumentError("model layout has no tensors");
  }
  // A layout comes from a peer: bound what it makes this shard allocate before cutting anything.
  uint64_t total = 0, chunks = 0;
  for (const proto::TensorDecl& decl : layout.tensors()) {
    if (decl.element_count() > static_cast<uint64_t>(kMaxModelParameters) - total) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model layout has more than ", kMaxModelParameters, " parameters (at tensor ",
          Quoted(decl.name()), ", ", decl.element_count(), " elements); Orrery takes at most that many"));
    }
    total += decl.element_count();
    chunks += (decl.element_count() + layout.chunk_size() - 1) / layout.chunk_size();
  }
  if (chunks > static_cast<uint64_t>(kMaxModelChunks)) {
    return absl::InvalidArgumentError(absl::StrCat("model layout cuts ", total, " parameters into ", chunks,
                                                   " chunks of ", layout.chunk_size(), ", more than ",
                                                   kMaxModelChunks, "; use a larger chunk size"));
  }
  ShardPlan plan;
  plan.layout_ = layout;
  plan.by_shard_.resize(layout.num_shards());
  const uint64_t s = layout.num_shards();
  const uint64_t cs = layout.chunk_size();
  for (int t = 0; t < layout.tensors_size(); ++t) {
    const proto::TensorDecl& decl = layout.tensors(t);
    if (decl.name().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor #", t, " of the layout has no name"));
    }
    if (!plan.tensor_index_.emplace(decl.name(), t).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor name '", decl.name(), "' appears twice in the layout"));
    }
    if (decl.dims_size() > 0) {
      uint64_t product = 1;
      for (int64_t d : decl.dims()) {
        if (d < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("tensor '", decl.name(), "' has a negative dimension ", d));
        }
        product *= static_cast<uint64_t>(d);
      }
      if (product != decl.element_count()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", decl.name(), "' declares ", decl.element_count(),
            " elements but its dims multiply to ", product));
      }
    }
    plan.first_chunk_.push_back(static_cast<int>(plan.chunks_.size()));
    const uint64_t n = decl.element_count();
    const uint64_t start = Fnv1a64(decl.name());
    for (uint64_t k = 0; k * cs < n; ++k) {
      if (k > UINT32_MAX) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", decl.name(), "' has more than 2^32 chunks"));
      }
      Chunk c;
      c.tensor = t;
      c.index = static_cast<uint32_t>(k);
      c.offset = plan.total_elements_ + k * cs;
      c.length = static_cast<uint32_t>(std::min(cs, n - k * cs));
      c.shard = static_cast<uint32_t>((start + k) % s);
      plan.by_shard_[c.shard].push_back(static_cast<int>(plan.chunks_.size()));
      plan.chunks_.push_back(c);
    }
    plan.total_elements_ += n;
  }
  return plan;
}

uint64_t ShardPlan::ShardElements(uint32_t shard) const {
  uint64_t sum = 0;
  for (int i : by_shard_[shard]) sum += chunks_[i].length;
  return sum;
}

absl::StatusOr<int> ShardPlan::FindChunk(absl::string_view tensor, uint32_t index) const {
  auto it = tensor_index_.find(tensor);
  if (it == tensor_index_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown tensor '", tensor, "': it is not in the model layout"));
  }
  const int t = it->second;
  const int first = first_chunk_[t];
  const int end = t + 1 < static_cast<int>(first_chunk_.size()) ? first_chunk_[t + 1]
                                                                : static_cast<int>(chunks_.size());
  if (static_cast<int64_t>(index) >= end - first) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor, "' has ", end - first,
                                                   " chunks; chunk ", index, " does not exist"));
  }
  return first + static_cast<int>(index);
}

absl::Status CompareLayouts(const proto::ModelLayout& expected, const proto::ModelLayout& got) {
  if (expected.chunk_size() != got.chunk_size()) {
    return absl::InvalidArgumentError(absl::StrCat("layout mismatch: chunk_size is ",
                                                   got.chunk_size(), " but the job uses ",
                                                   expected.chunk_size()));
  }
  if (expected.num_shards() != got.num_shards()) {
    return absl::InvalidArgumentError(absl::StrCat("layout mismatch: num_shards is ",
                                                   got.num_shards(), " but the job uses ",
                                                   expected.num_shards()));
  }
  if (expected.tensors_size() != got.tensors_size()) {
    return absl::InvalidArgumentError(absl::StrCat("layout mismatch: ", got.tensors_size(),
                                                   " tensors but the job's model has ",
                                                   expected.tensors_size()));
  }
  for (int i = 0; i < expected.tensors_size(); ++i) {
    const auto& e = expected.tensors(i);
    const auto& g = got.tensors(i);
    if (e.name() != g.name() || e.element_count() != g.element_count()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layout mismatch at tensor #", i, ": got '", g.name(), "' with ", g.element_count(),
          " elements, the job's model has '", e.name(), "' with ", e.element_count()));
    }
    if (g.dims_size() > 0 && e.dims_size() > 0 &&
        !std::equal(e.dims().begin(), e.dims().end(), g.dims().begin(), g.dims().end())) {
      return absl::InvalidArgumentError(
          absl::StrCat("layout mismatch at tensor '", e.name(), "': dims differ"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<proto::ModelLayout> ReadLayoutFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open layout file ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  proto::ModelLayout layout;
  const std::string bytes = buf.str();
  if (absl::EndsWith(path, ".pb") || absl::EndsWith(path, ".binpb")) {
    if (!layout.ParseFromString(bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("layout file ", path, " is not a binary ModelLayout proto"));
    }
  } else if (!google::protobuf::TextFormat::ParseFromString(bytes, &layout)) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout file ", path, " is not a text-format ModelLayout proto"));
  }
  return layout;
}

}  // namespace orrery::server
