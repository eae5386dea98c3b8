// Two real in-process shards on 127.0.0.1 and the learner client talking to them over gRPC.
#include <cmath>
#include <cstring>
#include <fstream>
#include <future>
#include <limits>
#include <set>
#include <thread>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "parameter_server.grpc.pb.h"
#include "server/client.h"
#include "tests/server/shard_cluster.h"
#include "tests/server/shard_test_util.h"
#include "server/shard_server.h"
#include "server/sharding.h"
#include "server/tensor_codec.h"

namespace orrery::server {
namespace {

constexpr int kShards = 2;

class PsServiceTest : public ::testing::Test {
 protected:
  void StartShards(const std::string& protocol, int learners, float lr = 0.5f,
                   int64_t max_message_bytes = 512ll << 20) {
    for (int s = 0; s < kShards; ++s) {
      ServerOptions o = testing::TestShardOptions(s, kShards, protocol, learners, lr);
      o.max_message_bytes = max_message_bytes;
      testing::StartTestShard(o, &servers_, &endpoints_);
      if (HasFatalFailure()) return;
    }
  }

  ClientOptions Options(int learner_id = -1) const {
    return testing::TestClientOptions(endpoints_, learner_id,
                                      {{"conv.w", 1000}, {"conv.b", 10}, {"fc.w", 3000}, {"fc.b", 7}});
  }

  static std::vector<float> Ramp(size_t n) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = 0.001f * static_cast<float>(i);
    return v;
  }

  // Waits (with a deadline, no fixed sleep) until `pred` holds.
  template <typename Pred>
  static bool Eventually(Pred pred, absl::Duration limit = absl::Seconds(10)) {
    const absl::Time end = absl::Now() + limit;
    while (absl::Now() < end) {
      if (pred()) return true;
      std::this_thread::yield();
    }
    return pred();
  }

  int ParkedPulls() {
    int n = 0;
    for (auto& s : servers_) n += s->shard().parked_pulls();
    return n;
  }

  void RunConcurrentAsyncLearners(uint64_t pull_part_bytes);

  std::vector<std::string> endpoints_;
  std::vector<std::unique_ptr<ShardServer>> servers_;
};

TEST_F(PsServiceTest, PullPushRoundTripAcrossTwoShards) {
  StartShards("async", 1);
  auto client = PsClient::Connect(Options());
  ASSERT_TRUE(client.ok()) << client.status();
  PsClient& ps = **client;
  EXPECT_EQ(ps.learner_id(), 0);
  const size_t n = ps.total_elements();
  ASSERT_EQ(n, 4017u);
  const std::vector<float> init = Ramp(n);
  ASSERT_TRUE(ps.Init(init).ok());
  std::vector<float> w(n, -1.0f);
  ASSERT_TRUE(ps.Pull(0, w).ok());
  EXPECT_EQ(w, init);
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i) g[i] = static_cast<float>(i % 5);
  ASSERT_TRUE(ps.Push(0, g, 32, 2.5f).ok());
  ASSERT_TRUE(ps.Pull(1, w).ok());
  for (size_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(w[i], init[i] - 0.5f * g[i]) << i;
  auto stats = ps.Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->shards.size(), 2u);
  for (const ShardStats& s : stats->shards) {
    EXPECT_EQ(s.version, 1u);
    EXPECT_EQ(s.gradients_applied, 1u);
  }
  EXPECT_EQ(stats->total.samples_applied, 32u);
  EXPECT_EQ(stats->total.staleness_max, 0u);
  // Both shards own part of the model.
  EXPECT_GT(servers_[0]->shard().DebugState().weights.size(), 0u);
  EXPECT_GT(servers_[1]->shard().DebugState().weights.size(), 0u);
  EXPECT_TRUE(ps.Leave().ok());
}

TEST_F(PsServiceTest, LargePullAcrossTwoShardsDecodesEveryChunk) {
  // Each shard's answer is over a megabyte, so the client decodes one beside the calling thread
  // while it receives the other.
  StartShards("async", 1);
  ClientOptions o = Options();
  o.tensors = {{"big.w", 700000}, {"big.b", 33}};
  o.chunk_size = 16384;
  auto client = PsClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status();
  PsClient& ps = **client;
  const size_t n = ps.total_elements();
  const std::vector<float> init = Ramp(n);
  ASSERT_TRUE(ps.Init(init).ok());
  std::vector<float> w(n, -1.0f);
  ASSERT_TRUE(ps.Pull(0, w).ok());
  ASSERT_EQ(w, init);
  ASSERT_GT(ps.wire_stats().pull_bytes, 2u * 1000000);
  std::vector<float> g(n, 1.0f);
  ASSERT_TRUE(ps.Push(0, g, 1, 0.0f).ok());
  ASSERT_TRUE(ps.Pull(1, w).ok());
  for (size_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(w[i], init[i] - 0.5f) << i;
}

// Pulls in parts (PullRequest.part/parts), two on the wire at a time and each decoded on arrival,
// give the same weights and versions as one call per shard, and count as one pull.
TEST_F(PsServiceTest, PullsInPartsMatchWholePulls) {
  StartShards("async", 2);
  ClientOptions whole_options = Options();
  whole_options.tensors = {{"big.w", 300000}, {"big.b", 33}};
  whole_options.chunk_size = 4096;
  whole_options.pull_part_bytes = 0;
  ClientOptions parted_options = whole_options;
  parted_options.pull_part_bytes = 100 << 10;  // ~6 parts per shard of ~600 KB
  auto whole = PsClient::Connect(whole_options);
  auto parted = PsClient::Connect(parted_options);
  ASSERT_TRUE(whole.ok() && parted.ok());
  const size_t n = (*whole)->total_elements();
  const std::vector<float> init = Ramp(n);
  ASSERT_TRUE((*whole)->Init(init).ok());
  std::vector<float> a(n, -1.0f), b(n, -2.0f);
  ASSERT_TRUE((*parted)->Pull(0, b).ok());
  ASSERT_EQ(b, init);
  // An update between pulls: the parted learner's next push is tagged with the new versions, so
  // its gradient is applied with staleness 0 like the whole learner's.
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i) g[i] = static_cast<float>(i % 3);
  ASSERT_TRUE((*whole)->Pull(0, a).ok());
  ASSERT_TRUE((*whole)->Push(0, g, 1, 0.0f).ok());
  ASSERT_TRUE((*parted)->Pull(1, b).ok());
  ASSERT_TRUE((*whole)->Pull(1, a).ok());
  EXPECT_EQ(a, b);
  for (size_t i = 0; i < n; i += 997) ASSERT_FLOAT_EQ(b[i], init[i] - 0.5f * g[i]) << i;
  ASSERT_TRUE((*parted)->Push(1, g, 1, 0.0f).ok());
  auto stats = (*parted)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->total.staleness_max, 0u);
  EXPECT_EQ(stats->total.pulls, 4u);  // two pulls from each learner, whatever their parts
  EXPECT_EQ((*parted)->wire_stats().pulls, 2u);
  EXPECT_GT((*parted)->wire_stats().pull_bytes, 2u * 4 * n);
  // FIXED16 weights in parts: the same values as FP32 to the grid's precision.
  ClientOptions fixed_options = parted_options;
  fixed_options.wire = proto::FIXED16;
  auto fixed = PsClient::Connect(fixed_options);
  ASSERT_TRUE(fixed.ok());
  std::vector<float> c(n);
  ASSERT_TRUE((*fixed)->Pull(2, c).ok());
  ASSERT_TRUE((*whole)->Pull(2, a).ok());
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(c[i], a[i], 0.01f * std::abs(a[i]) + 1e-3f) << i;
}

TEST_F(PsServiceTest, HardsyncPullWaitsForTheOtherLearnerThroughRpc) {
  StartShards("hardsync", 2);
  auto a = PsClient::Connect(Options());
  auto b = PsClient::Connect(Options());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)->learner_id(), (*b)->learner_id());
  const size_t n = (*a)->total_elements();
  ASSERT_TRUE((*a)->Init(std::vector<float>(n, 1.0f)).ok());
  ASSERT_TRUE((*b)->Init(std::vector<float>(n, 9.0f)).ok());  // not accepted: first wins
  std::vector<float> wa(n), wb(n);
  ASSERT_TRUE((*a)->Pull(0, wa).ok());
  ASSERT_TRUE((*b)->Pull(0, wb).ok());
  EXPECT_EQ(wb[0], 1.0f);
  ASSERT_TRUE((*a)->Push(0, std::vector<float>(n, 1.0f), 8, 1.0f).ok());
  auto waiting = std::async(std::launch::async, [&] { return (*a)->Pull(1, wa); });
  ASSERT_TRUE(Eventually([&] { return ParkedPulls() == kShards; }));
  EXPECT_EQ(waiting.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  ASSERT_TRUE((*b)->Push(0, std::vector<float>(n, 3.0f), 8, 1.0f).ok());
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  ASSERT_TRUE(waiting.get().ok());
  for (float v : wa) ASSERT_FLOAT_EQ(v, 1.0f - 0.5f * 2.0f);
  auto stats = (*a)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->total.version, 1u);
  EXPECT_EQ(stats->total.gradients_applied, 2u);
}

// Learner `learner`'s push of `step` (every element `g`, computed on version 0) delivered to
// shard `shard` alone, straight into it: what a learner killed in the middle of a push leaves.
absl::Status PushToOneShard(ShardServer& server, const PsClient& client, int shard, int learner,
                            int64_t step, float g) {
  absl::StatusOr<ShardPlan> plan = ShardPlan::Create(client.layout());
  if (!plan.ok()) return plan.status();
  return server.shard()
      .Push(testing::UniformPush(*plan, shard, testing::kTestJob, testing::kTestToken, learner, step, g, 0))
      .status();
}

// Both learners of a hardsync job die in the middle of their step-0 pushes, crosswise: learner 0's
// reached shard 0 only, learner 1's shard 1 only (a run stopped by Ctrl-C can end so). Started
// again, each continues from the smallest clock its shards report and pushes step 0 again; the
// shard that has it already answers ALREADY_EXISTS. Every shard's step 0 then averages both
// learners' gradients. (From the largest clock, each shard completed step 0 with one gradient:
// the pull at clock 1 told it the missing learner had moved on.)
TEST_F(PsServiceTest, LearnersThatDiedMidPushPushTheirStepAgainToTheShardsThatMissedIt) {
  StartShards("hardsync", 2);
  {
    auto a = PsClient::Connect(Options(0));
    auto b = PsClient::Connect(Options(1));
    ASSERT_TRUE(a.ok() && b.ok());
    const size_t n = (*a)->total_elements();
    ASSERT_TRUE((*a)->Init(std::vector<float>(n, 1.0f)).ok());
    std::vector<float> w(n);
    ASSERT_TRUE((*a)->Pull(0, w).ok());
    ASSERT_TRUE((*b)->Pull(0, w).ok());
    ASSERT_TRUE(PushToOneShard(*servers_[0], **a, 0, 0, 0, 1.0f).ok());
    ASSERT_TRUE(PushToOneShard(*servers_[1], **b, 1, 1, 0, 3.0f).ok());
  }  // both "die" without leaving
  auto a = PsClient::Connect(Options(0));
  auto b = PsClient::Connect(Options(1));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->start_clock(), 0);
  EXPECT_EQ((*b)->start_clock(), 0);
  const size_t n = (*a)->total_elements();
  std::vector<float> wa(n), wb(n);
  ASSERT_TRUE((*a)->Pull((*a)->start_clock(), wa).ok());
  ASSERT_TRUE((*b)->Pull((*b)->start_clock(), wb).ok());
  ASSERT_TRUE((*a)->Push(0, std::vector<float>(n, 1.0f), 8, 1.0f).ok());
  ASSERT_TRUE((*b)->Push(0, std::vector<float>(n, 3.0f), 8, 1.0f).ok());
  ASSERT_TRUE((*a)->Pull(1, wa).ok());
  for (size_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(wa[i], 1.0f - 0.5f * 2.0f) << i;
  auto stats = (*a)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  for (const ShardStats& s : stats->shards) {
    EXPECT_EQ(s.version, 1u) << "shard " << s.shard;
    EXPECT_EQ(s.gradients_applied, 2u) << "shard " << s.shard;
    EXPECT_EQ(s.samples_applied, 16u) << "shard " << s.shard;
  }
}

// A learner dropped by one shard only (its timeout is shorter), which completed step 0 without
// it, is started again: its push of step 0 is applied by the shard that still waited for it and
// refused by the other (FAILED_PRECONDITION); start_clock() then says to go on from clock 1, so
// the learner does not push step 0 over and over.
TEST_F(PsServiceTest, APushRefusedByAShardThatMovedOnRaisesTheClockToContinueFrom) {
  for (int s = 0; s < kShards; ++s) {
    ServerOptions o = testing::TestShardOptions(s, kShards, "hardsync", 2);
    if (s == 0) o.learner_timeout_seconds = 0.2;
    testing::StartTestShard(o, &servers_, &endpoints_);
    ASSERT_FALSE(HasFatalFailure());
  }
  auto b = PsClient::Connect(Options(1));
  ASSERT_TRUE(b.ok());
  const size_t n = (*b)->total_elements();
  {
    auto a = PsClient::Connect(Options(0));
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE((*a)->Init(std::vector<float>(n, 1.0f)).ok());
  }  // learner 0 goes silent
  std::vector<float> wb(n);
  ASSERT_TRUE((*b)->Pull(0, wb).ok());
  ASSERT_TRUE((*b)->Push(0, std::vector<float>(n, 3.0f), 8, 1.0f).ok());
  // Shard 0 drops learner 0 and completes step 0 with learner 1's gradient alone.
  ASSERT_TRUE(Eventually([&] { return servers_[0]->shard().DebugState().version == 1; }));
  auto a = PsClient::Connect(Options(0));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->start_clock(), 0) << "shard 1 still waits for learner 0's step 0";
  std::vector<float> wa(n);
  ASSERT_TRUE((*a)->Pull(0, wa).ok());
  absl::Status pushed = (*a)->Push(0, std::vector<float>(n, 1.0f), 8, 1.0f);
  EXPECT_TRUE(absl::IsFailedPrecondition(pushed)) << pushed;
  EXPECT_EQ((*a)->start_clock(), 1);
  ASSERT_TRUE((*a)->Pull(1, wa).ok());
  EXPECT_EQ(servers_[1]->shard().DebugState().version, 1u) << "shard 1 applied learner 0's step 0";
  ASSERT_TRUE((*a)->Push(1, std::vector<float>(n, 1.0f), 8, 1.0f).ok());
}

TEST_F(PsServiceTest, WrongTokenOrJobIsRefused) {
  StartShards("async", 1);
  ClientOptions bad_token = Options();
  bad_token.token = "guess";
  EXPECT_EQ(PsClient::Connect(bad_token).status().code(), absl::StatusCode::kUnauthenticated);
  ClientOptions other_job = Options();
  other_job.job_id = "job-b";
  EXPECT_EQ(PsClient::Connect(other_job).status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(PsServiceTest, MismatchedLayoutIsRefusedAtRegister) {
  StartShards("async", 2);
  ASSERT_TRUE(PsClient::Connect(Options()).ok());
  ClientOptions other = Options();
  other.tensors[2].element_count = 3001;
  auto st = PsClient::Connect(other).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("fc.w"), std::string::npos) << st;
}

class RawStub {
 public:
  explicit RawStub(const std::string& endpoint)
      : stub_(proto::ParameterServer::NewStub(
            grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()))) {}
  grpc::Status Push(const proto::PushRequest& r) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    proto::PushResponse resp;
    return stub_->Push(&ctx, r, &resp);
  }

 private:
  std::unique_ptr<proto::ParameterServer::Stub> stub_;
};

TEST_F(PsServiceTest, BadPushIsInvalidArgumentAndChangesNothing) {
  StartShards("async", 1);
  auto client = PsClient::Connect(Options(0));
  ASSERT_TRUE(client.ok());
  const size_t n = (*client)->total_elements();
  ASSERT_TRUE((*client)->Init(Ramp(n)).ok());
  std::vector<float> w(n);
  ASSERT_TRUE((*client)->Pull(0, w).ok());

  const ShardPlan plan = *ShardPlan::Create((*client)->layout());
  proto::PushRequest r;
  r.set_job_id("job-a");
  r.set_token("t0ken");
  r.set_learner_id(0);
  r.set_step(0);
  for (int i : plan.ChunksOfShard(0)) {
    const Chunk& c = plan.chunks()[i];
    auto* pc = r.add_chunks();
    pc->mutable_id()->set_tensor(plan.TensorName(c.tensor));
    pc->mutable_id()->set_index(c.index);
    std::vector<float> g(c.length, 1.0f);
    g.back() = std::numeric_limits<float>::quiet_NaN();
    ASSERT_TRUE(EncodeFloats(g, proto::FP32, pc->mutable_gradient()).ok());
  }
  RawStub raw(endpoints_[0]);
  const ShardState before = servers_[0]->shard().DebugState();
  grpc::Status st = raw.Push(r);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("NaN"), std::string::npos) << st.error_message();
  EXPECT_TRUE(servers_[0]->shard().DebugState() == before);

  r.mutable_chunks(0)->mutable_id()->set_tensor("no.such.tensor");
  st = raw.Push(r);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(servers_[0]->shard().DebugState() == before);

  r.set_token("nope");
  EXPECT_EQ(raw.Push(r).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  auto stats = (*client)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->shards[0].gradients_rejected, 2u);
  EXPECT_EQ(stats->shards[0].gradients_rejected_nonfinite, 1u);
}

TEST_F(PsServiceTest, OversizedMessageIsRefusedByTheClientWithItsLimit) {
  // The learners and the shards of a job share one max_message_bytes: the client refuses to send
  // a larger request, deterministically, before any byte reaches the shard.
  StartShards("async", 1, 0.5f, /*max_message_bytes=*/16 * 1024);
  ClientOptions o = Options(0);
  o.tensors = {{"big", 10000}};  // 40 KB of FP32
  o.chunk_size = 10000;          // one chunk: all of it on one shard
  o.max_message_bytes = 16 * 1024;
  auto client = PsClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Status st = (*client)->Init(std::vector<float>(10000, 0.0f));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  for (auto& server : servers_) {
    const ShardState state = server->shard().DebugState();
    if (!state.weights.empty()) {
      EXPECT_FALSE(state.initialized);  // the shard holding the chunk
    }
  }
}

TEST_F(PsServiceTest, OversizedMessageIsRefusedByTheShardAndChangesNothing) {
  // A client with a larger limit than the shard's: the shard refuses the message. gRPC reports
  // RESOURCE_EXHAUSTED, or CANCELLED when the shard's reset overtakes the status on the wire
  // (the client then names the likely cause); either way nothing is stored.
  StartShards("async", 1, 0.5f, /*max_message_bytes=*/16 * 1024);
  ClientOptions o = Options(0);
  o.tensors = {{"big", 10000}};
  o.chunk_size = 10000;
  auto client = PsClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Status st = (*client)->Init(std::vector<float>(10000, 0.0f));
  ASSERT_FALSE(st.ok());
  if (absl::IsCancelled(st)) {
    EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("max_message_bytes"));
  } else {
    EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  }
  for (auto& server : servers_) {
    const ShardState state = server->shard().DebugState();
    if (!state.weights.empty()) {
      EXPECT_FALSE(state.initialized);  // the shard holding the chunk
    }
  }
}

TEST_F(PsServiceTest, ShutdownReleasesParkedPulls) {
  StartShards("hardsync", 2);
  auto a = PsClient::Connect(Options());
  ASSERT_TRUE(a.ok());
  const size_t n = (*a)->total_elements();
  ASSERT_TRUE((*a)->Init(std::vector<float>(n, 0.0f)).ok());
  std::vector<float> w(n);
  auto waiting = std::async(std::launch::async, [&] { return (*a)->Pull(1, w); });
  ASSERT_TRUE(Eventually([&] { return ParkedPulls() == kShards; }));
  for (auto& s : servers_) s->Shutdown();
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_FALSE(waiting.get().ok());
}

}  // namespace
}  // namespace orrery::server

namespace orrery::server {
namespace {

TEST_F(PsServiceTest, LayoutAndInitialWeightsFromFiles) {
  const std::string dir = ::testing::TempDir();
  const std::string layout_path = dir + "/ps_layout.txt";
  const std::string weights_path = dir + "/ps_weights.f32";
  {
    std::ofstream l(layout_path);
    l << "tensors { name: \"w\" element_count: 300 }\n"
         "tensors { name: \"b\" element_count: 5 }\n"
         "chunk_size: 64\nnum_shards: 2\n";
    std::vector<float> init(305);
    for (size_t i = 0; i < init.size(); ++i) init[i] = static_cast<float>(i);
    std::ofstream w(weights_path, std::ios::binary);
    w.write(reinterpret_cast<const char*>(init.data()), init.size() * 4);
  }
  for (int s = 0; s < 2; ++s) {
    ServerOptions o;
    o.shard_index = s;
    o.num_shards = 2;
    o.job_id = "job-a";
    o.token = "t0ken";
    o.layout_path = layout_path;
    o.initial_weights_path = weights_path;
    auto server = ShardServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    endpoints_.push_back((*server)->address());
    servers_.push_back(std::move(*server));
  }
  ClientOptions o = Options();
  o.tensors = {{"w", 300}, {"b", 5}};
  o.chunk_size = 64;
  auto client = PsClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<float> w(305);
  ASSERT_TRUE((*client)->Pull(0, w).ok());  // no Init needed
  for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(w[i], static_cast<float>(i));
  o.chunk_size = 32;
  EXPECT_EQ(PsClient::Connect(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PsServiceTest, ExpiredLearnerIsRegisteredAgainByTheClient) {
  for (int s = 0; s < kShards; ++s) {
    ServerOptions o;
    o.shard_index = s;
    o.num_shards = kShards;
    o.job_id = "job-a";
    o.token = "t0ken";
    o.learner_timeout_seconds = 0.2;
    auto server = ShardServer::Start(o);
    ASSERT_TRUE(server.ok());
    endpoints_.push_back((*server)->address());
    servers_.push_back(std::move(*server));
  }
  auto client = PsClient::Connect(Options());
  ASSERT_TRUE(client.ok());
  const size_t n = (*client)->total_elements();
  ASSERT_TRUE((*client)->Init(std::vector<float>(n, 0.0f)).ok());
  std::vector<float> w(n);
  ASSERT_TRUE((*client)->Pull(0, w).ok());
  ASSERT_TRUE(Eventually([&] {
    return servers_[0]->shard().DebugState().learners.at(0).active == false &&
           servers_[1]->shard().DebugState().learners.at(0).active == false;
  }));
  absl::Status pushed = (*client)->Push(0, std::vector<float>(n, 1.0f), 4, 0.5f);
  EXPECT_TRUE(pushed.ok()) << pushed;
  auto stats = (*client)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->total.gradients_applied, 1u);
}

// Four async learners pulling and pushing at once; with `pull_part_bytes` small, their pulls come
// in parts that other learners' updates fall between, and their pushes must still be accepted.
TEST_F(PsServiceTest, ConcurrentAsyncLearnersEveryPushAccountedFor) {
  RunConcurrentAsyncLearners(0);
}

TEST_F(PsServiceTest, ConcurrentAsyncLearnersPullingInPartsEveryPushAccountedFor) {
  RunConcurrentAsyncLearners(1024);
}

void PsServiceTest::RunConcurrentAsyncLearners(uint64_t pull_part_bytes) {
  StartShards("async", 4, 0.001f);
  constexpr int kLearners = 4, kSteps = 40;
  std::vector<std::unique_ptr<PsClient>> clients;
  for (int i = 0; i < kLearners; ++i) {
    ClientOptions o = Options();
    o.pull_part_bytes = pull_part_bytes;
    auto c = PsClient::Connect(o);
    ASSERT_TRUE(c.ok());
    clients.push_back(std::move(*c));
  }
  const size_t n = clients[0]->total_elements();
  ASSERT_TRUE(clients[0]->Init(std::vector<float>(n, 0.0f)).ok());
  std::vector<std::future<absl::Status>> runs;
  for (int i = 0; i < kLearners; ++i) {
    runs.push_back(std::async(std::launch::async, [&, i]() -> absl::Status {
      std::vector<float> w(n), g(n, 1.0f);
      for (int t = 0; t < kSteps; ++t) {
        absl::Status st = clients[i]->Pull(t, w);
        if (!st.ok()) return st;
        st = clients[i]->Push(t, g, 1, 0.0f);
        if (!st.ok()) return st;
      }
      return absl::OkStatus();
    }));
  }
  for (auto& r : runs) ASSERT_TRUE(r.get().ok());
  auto stats = clients[0]->Stats();
  ASSERT_TRUE(stats.ok());
  for (const ShardStats& s : stats->shards) {
    EXPECT_EQ(s.gradients_applied, static_cast<uint64_t>(kLearners * kSteps));
    EXPECT_EQ(s.version, static_cast<uint64_t>(kLearners * kSteps));
    EXPECT_EQ(s.gradients_rejected, 0u);
  }
  std::vector<float> w(n);
  ASSERT_TRUE(clients[0]->Pull(kSteps, w).ok());
  for (float v : w) ASSERT_NEAR(v, -0.001f * kLearners * kSteps, 1e-4);
}

// A shard's pull answers point into its weights (no copy-out; ShardStore::AnswerPull) while
// updates go on. Observers pull over raw gRPC as fast as they can while two learners push: every
// chunk must hold exactly the weights of the version it is tagged with. Each gradient is all ones
// at rate 1 from zero weights, so version v's weights are all exactly -v; a buffer written while
// gRPC still sends it would show a chunk mixing versions or disagreeing with its tag.
TEST_F(PsServiceTest, PulledChunksHoldTheirVersionsWeightsWhileUpdatesRace) {
  StartShards("async", 2, 1.0f);
  auto options = [&] {
    ClientOptions o = testing::TestClientOptions(endpoints_, -1, {{"w", 300000}, {"b", 100}});
    o.chunk_size = 16384;  // 64 KB payloads: sent as slices of the weights
    return o;
  };
  std::vector<std::unique_ptr<PsClient>> learners;
  for (int i = 0; i < 2; ++i) {
    auto c = PsClient::Connect(options());
    ASSERT_TRUE(c.ok()) << c.status();
    learners.push_back(std::move(*c));
  }
  const size_t n = learners[0]->total_elements();
  ASSERT_TRUE(learners[0]->Init(std::vector<float>(n, 0.0f)).ok());

  constexpr int kSteps = 60;
  std::atomic<int> learners_done{0};
  std::vector<std::future<absl::Status>> runs;
  for (int i = 0; i < 2; ++i) {
    runs.push_back(std::async(std::launch::async, [&, i]() -> absl::Status {
      std::vector<float> w(n), g(n, 1.0f);
      absl::Status st;
      for (int t = 0; t < kSteps && st.ok(); ++t) {
        st = learners[i]->Pull(t, w);
        if (st.ok()) st = learners[i]->Push(t, g, 1, 0.0f);
      }
      learners_done.fetch_add(1);
      return st;
    }));
  }
  struct Seen {
    int pulls = 0, chunks = 0, wrong = 0;
    std::set<uint64_t> versions;
    std::string first_wrong;
  };
  std::vector<std::future<Seen>> observers;
  for (int o = 0; o < 2; ++o) {
    observers.push_back(std::async(std::launch::async, [&, o]() {
      Seen seen;
      auto stub = proto::ParameterServer::NewStub(
          grpc::CreateChannel(endpoints_[o % kShards], grpc::InsecureChannelCredentials()));
      const absl::Time deadline = absl::Now() + absl::Seconds(60);
      while (learners_done.load() < 2 && absl::Now() < deadline && seen.pulls < 5000) {
        proto::PullRequest r;
        r.set_job_id(testing::kTestJob);
        r.set_token(testing::kTestToken);
        r.set_learner_id(-2);  // an observer: never waits on the protocol
        r.set_encoding(proto::FP32);
        proto::PullResponse answer;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        if (!stub->Pull(&ctx, r, &answer).ok()) break;
        ++seen.pulls;
        for (const proto::PullChunk& c : answer.chunks()) {
          std::vector<float> v(c.weights().element_count());
          if (!DecodeFloats(c.weights(), v).ok()) {
            ++seen.wrong;
            continue;
          }
          ++seen.chunks;
          seen.versions.insert(c.version());
          const float expected = -static_cast<float>(c.version());
          for (float x : v) {
            if (x != expected) {
              if (seen.wrong++ == 0) {
                seen.first_wrong = absl::StrCat(c.id().tensor(), "/", c.id().index(),
                                                " at version ", c.version(), " holds ", x);
              }
              break;
            }
          }
        }
      }
      return seen;
    }));
  }
  for (auto& r : runs) ASSERT_TRUE(r.get().ok());
  int pulls = 0, chunks = 0;
  std::set<uint64_t> versions;
  for (auto& f : observers) {
    Seen seen = f.get();
    EXPECT_EQ(seen.wrong, 0) << seen.first_wrong;
    pulls += seen.pulls;
    chunks += seen.chunks;
    versions.insert(seen.versions.begin(), seen.versions.end());
  }
  EXPECT_GT(pulls, 10);
  EXPECT_GT(versions.size(), 10u) << "the observers' pulls did not overlap the updates";
  std::vector<float> w(n);
  ASSERT_TRUE(learners[0]->Pull(kSteps, w).ok());
  for (float v : w) ASSERT_EQ(v, -2.0f * kSteps);
}

}  // namespace
}  // namespace orrery::server
