// A shard's PullResponse as the learner decodes it (server/pull_decoder.h), whole and as a part of
// a pull in parts: any bytes must either decode into the expected chunks or be refused, never
// read or write outside the weights and versions buffers.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "parameter_server.pb.h"
#include "server/pull_decoder.h"
#include "server/sharding.h"
#include "tests/server/layout_util.h"

namespace {

// Two tensors (5 and 7 elements) in chunks of 3 over 2 shards, as in the decoder's unit tests.
const orrery::server::ShardPlan& Plan() {
  static const orrery::server::ShardPlan* plan = new orrery::server::ShardPlan(
      *orrery::server::ShardPlan::Create(orrery::server::testing::MakeLayout({{"a", 5}, {"b", 7}}, 3, 2)));
  return *plan;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const orrery::server::ShardPlan& plan = Plan();
  std::vector<float> weights(plan.total_elements(), 7.0f);
  std::vector<uint64_t> versions(plan.chunks().size(), 0);
  {
    google::protobuf::io::ArrayInputStream in(data, static_cast<int>(size));
    (void)orrery::server::DecodePullResponse(&in, plan, 0, weights, versions);
  }
  // The first of two parts of shard 0's chunks (the client's split).
  const std::vector<int>& chunks = plan.ChunksOfShard(0);
  const std::vector<int> first(chunks.begin(), chunks.begin() + chunks.size() / 2);
  google::protobuf::io::ArrayInputStream in(data, static_cast<int>(size));
  (void)orrery::server::DecodePullResponsePart(&in, plan, 0, first, weights, versions);
  return 0;
}
