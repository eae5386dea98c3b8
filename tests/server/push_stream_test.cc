// The PushStream RPC: real in-process shards on 127.0.0.1, driven through the learner client and
// through a raw stream that sends exactly the messages a test wants.
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <tuple>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "parameter_server.grpc.pb.h"
#include "server/client.h"
#include "tests/server/shard_cluster.h"
#include "server/clock.h"
#include "server/status_util.h"
#include "server/shard_server.h"
#include "server/tensor_codec.h"

namespace orrery::server {
namespace {

using ::testing::HasSubstr;

// A client connected with `options` that has set every weight to 1 (each shard takes the first
// Init); null, with the test failed, when it could not connect.
std::unique_ptr<PsClient> InitializedClient(const ClientOptions& options) {
  absl::StatusOr<std::unique_ptr<PsClient>> client = PsClient::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) return nullptr;
  EXPECT_TRUE((*client)->Init(std::vector<float>((*client)->total_elements(), 1.0f)).ok());
  return *std::move(client);
}

class PushStreamTest : public ::testing::Test {
 protected:
  void StartShards(int shards, const std::string& protocol = "async", int learners = 1) {
    for (int s = 0; s < shards; ++s) {
      ServerOptions o = testing::TestShardOptions(s, shards, protocol, learners, 0.5f);
      testing::StartTestShard(o, &servers_, &endpoints_);
      if (HasFatalFailure()) return;
    }
  }

  ClientOptions Options(int learner_id = -1) const {
    return testing::TestClientOptions(endpoints_, learner_id, {{"w", 1000}, {"b", 10}});
  }

  // A push of `value` everywhere for every chunk shard `shard` owns.
  static proto::PushRequest ShardPush(const PsClient& client, int shard, int64_t step,
                                      float value) {
    const ShardPlan plan = *ShardPlan::Create(client.layout());
    proto::PushRequest r;
    r.set_learner_id(client.learner_id());
    r.set_step(step);
    r.set_samples(1);
    for (int i : plan.ChunksOfShard(shard)) {
      const Chunk& c = plan.chunks()[i];
      proto::PushChunk* pc = r.add_chunks();
      pc->mutable_id()->set_tensor(plan.TensorName(c.tensor));
      pc->mutable_id()->set_index(c.index);
      std::vector<float> g(c.length, value);
      EXPECT_TRUE(EncodeFloats(g, proto::FP32, pc->mutable_gradient()).ok());
    }
    return r;
  }

  // `a` sets every weight to 1, then `a` and `b` take turns for `steps` steps, each pulling and
  // pushing g[i] = i mod 3 (2 samples, lr 0.5); every weight must end at 1 - steps·(i mod 3).
  static void TakeTurns(PsClient& a, PsClient& b, int steps) {
    const size_t n = a.total_elements();
    ASSERT_TRUE(a.Init(std::vector<float>(n, 1.0f)).ok());
    std::vector<float> w(n), g(n);
    for (size_t i = 0; i < n; ++i) g[i] = static_cast<float>(i % 3);
    for (int t = 0; t < steps; ++t) {
      for (PsClient* c : {&a, &b}) {
        ASSERT_TRUE(c->Pull(t, w).ok());
        absl::Status st = c->Push(t, g, 2, 0.5f);
        ASSERT_TRUE(st.ok()) << st;
      }
    }
    ASSERT_TRUE(a.Pull(steps, w).ok());
    for (size_t i = 0; i < n; ++i) {
      ASSERT_FLOAT_EQ(w[i], 1.0f - 0.5f * 2 * steps * static_cast<float>(i % 3)) << i;
    }
  }

  // A client of one running shard that has set every weight to 1 and pulled at clock 0 (so its
  // pushes have base versions); null, with the test failed, otherwise.
  std::unique_ptr<PsClient> PulledClient() {
    StartShards(1);
    if (HasFatalFailure()) return nullptr;
    std::unique_ptr<PsClient> client = InitializedClient(Options());
    if (client == nullptr) return nullptr;
    std::vector<float> w(client->total_elements());
    EXPECT_TRUE(client->Pull(0, w).ok());
    return client;
  }

  // ShardPush with the job's credentials, as a stream's first message must carry them.
  static proto::PushRequest FirstPush(const PsClient& client, int shard, int64_t step,
                                      float value) {
    proto::PushRequest r = ShardPush(client, shard, step, value);
    r.set_job_id(testing::kTestJob);
    r.set_token(testing::kTestToken);
    return r;
  }

  // A raw PushStream to shard `shard`.
  struct RawStream {
    std::unique_ptr<proto::ParameterServer::Stub> stub;
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<proto::PushRequest, proto::PushStreamResponse>> rw;
  };
  std::unique_ptr<RawStream> OpenRaw(int shard) {
    auto raw = std::make_unique<RawStream>();
    raw->stub = proto::ParameterServer::NewStub(
        grpc::CreateChannel(endpoints_[shard], grpc::InsecureChannelCredentials()));
    raw->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    raw->rw = raw->stub->PushStream(&raw->context);
    return raw;
  }

  std::vector<std::string> endpoints_;
  std::vector<std::unique_ptr<ShardServer>> servers_;
};

TEST_F(PushStreamTest, ClientPushesOverStreamsWithTheSameResultAsUnary) {
  StartShards(2, "async", 2);
  auto streamed = PsClient::Connect(Options());
  ClientOptions unary_options = Options();
  unary_options.push_streams = false;  // an older client: one unary Push call per shard
  auto unary = PsClient::Connect(unary_options);
  ASSERT_TRUE(streamed.ok() && unary.ok());
  constexpr int kSteps = 5;
  TakeTurns(**streamed, **unary, kSteps);
  if (HasFatalFailure()) return;
  EXPECT_EQ((*streamed)->wire_stats().streamed_shard_pushes, 2u * kSteps);
  EXPECT_EQ((*unary)->wire_stats().streamed_shard_pushes, 0u);
  auto stats = (*streamed)->Stats();
  ASSERT_TRUE(stats.ok());
  for (const ShardStats& s : stats->shards) {
    EXPECT_EQ(s.gradients_applied, 2u * kSteps);
    EXPECT_EQ(s.pushes, 2u * kSteps);
    EXPECT_EQ(s.samples_applied, 4u * kSteps);
  }
}

TEST_F(PushStreamTest, RefusedPushMidStreamChangesNothingAndTheStreamGoesOn) {
  std::unique_ptr<PsClient> client = PulledClient();
  ASSERT_NE(client, nullptr);
  ParameterShard& shard = servers_[0]->shard();
  auto raw = OpenRaw(0);
  proto::PushStreamResponse answer;

  // First message: the stream's credentials, and a gradient with a NaN.
  proto::PushRequest bad = FirstPush(*client, 0, 0, 1.0f);
  std::string* data = bad.mutable_chunks(0)->mutable_gradient()->mutable_data();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(data->data(), &nan, sizeof nan);
  const ShardState before = shard.DebugState();
  ASSERT_TRUE(raw->rw->Write(bad));
  ASSERT_TRUE(raw->rw->Read(&answer));
  EXPECT_EQ(answer.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(answer.message(), HasSubstr("NaN"));
  EXPECT_EQ(answer.step(), 0);
  EXPECT_TRUE(shard.DebugState() == before);

  // A chunk of the wrong size.
  proto::PushRequest short_chunk = ShardPush(*client, 0, 0, 1.0f);
  short_chunk.mutable_chunks(0)->mutable_gradient()->set_element_count(3);
  short_chunk.mutable_chunks(0)->mutable_gradient()->mutable_data()->resize(12);
  ASSERT_TRUE(raw->rw->Write(short_chunk));
  ASSERT_TRUE(raw->rw->Read(&answer));
  EXPECT_EQ(answer.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(shard.DebugState() == before);

  // A later message naming a wrong token is refused like a unary push would be.
  proto::PushRequest wrong_token = ShardPush(*client, 0, 0, 1.0f);
  wrong_token.set_job_id("job-a");
  wrong_token.set_token("guess");
  ASSERT_TRUE(raw->rw->Write(wrong_token));
  ASSERT_TRUE(raw->rw->Read(&answer));
  EXPECT_EQ(answer.code(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));
  EXPECT_TRUE(shard.DebugState() == before);

  // The same stream then carries a good push (no credentials: they are the stream's).
  ASSERT_TRUE(raw->rw->Write(ShardPush(*client, 0, 0, 1.0f)));
  ASSERT_TRUE(raw->rw->Read(&answer));
  EXPECT_EQ(answer.code(), 0) << answer.message();
  EXPECT_EQ(answer.version(), 1u);
  // A duplicate of that step: ALREADY_EXISTS, nothing applied twice.
  ASSERT_TRUE(raw->rw->Write(ShardPush(*client, 0, 0, 1.0f)));
  ASSERT_TRUE(raw->rw->Read(&answer));
  EXPECT_EQ(answer.code(), static_cast<int>(grpc::StatusCode::ALREADY_EXISTS));
  EXPECT_EQ(shard.DebugState().version, 1u);

  ASSERT_TRUE(raw->rw->WritesDone());
  EXPECT_FALSE(raw->rw->Read(&answer));
  grpc::Status finished = raw->rw->Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_message();
  auto stats = client->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->shards[0].gradients_applied, 1u);
  EXPECT_EQ(stats->shards[0].gradients_rejected, 2u);  // the NaN and the short chunk
  EXPECT_EQ(stats->shards[0].gradients_rejected_nonfinite, 1u);
}

// Pushes in parts (PushRequest.part/parts): the client sends each shard's push as several
// messages on its stream and the shard applies it once, exactly as a whole push.
TEST_F(PushStreamTest, ClientPushesInPartsWithTheSameResultAsWholePushes) {
  StartShards(2, "async", 2);
  ClientOptions parted_options = Options();
  parted_options.tensors = {{"w", 5000}, {"b", 10}};  // 10 chunks of 256 per shard
  parted_options.push_part_bytes = 4096;                // 3 parts per shard
  ClientOptions whole_options = parted_options;
  whole_options.push_part_bytes = 0;
  auto parted = PsClient::Connect(parted_options);
  auto whole = PsClient::Connect(whole_options);
  ASSERT_TRUE(parted.ok() && whole.ok());
  EXPECT_FALSE((*parted)->spreads_shards());  // a small model: every shard on the caller's thread
  constexpr int kSteps = 4;
  TakeTurns(**parted, **whole, kSteps);
  if (HasFatalFailure()) return;
  EXPECT_EQ((*parted)->wire_stats().streamed_shard_pushes, 2u * kSteps);
  EXPECT_GT((*parted)->wire_stats().push_bytes, 4u * (*parted)->total_elements() * kSteps);
  auto stats = (*parted)->Stats();
  ASSERT_TRUE(stats.ok());
  for (const ShardStats& st : stats->shards) {
    EXPECT_EQ(st.gradients_applied, 2u * kSteps);
    EXPECT_EQ(st.pushes, 2u * kSteps);
    EXPECT_EQ(st.version, 2u * kSteps);  // one update per push, not per part
    EXPECT_EQ(st.gradients_rejected, 0u);
  }
}

// A model of over 1 MB per shard has each shard's push made and sent on a thread of its own, as
// its pulls are: every push still goes over the streams, in parts, applied once and exactly.
TEST_F(PushStreamTest, PushesOfALargeModelRunOnAThreadPerShardWithTheSameResult) {
  StartShards(3, "async", 2);
  ClientOptions spread_options = Options();
  spread_options.tensors = {{"w", 900000}, {"b", 10}};  // 3.6 MB, 1.2 MB per shard
  spread_options.push_part_bytes = 256 << 10;           // 4-5 parts per shard
  ClientOptions whole_options = spread_options;
  whole_options.push_part_bytes = 0;
  auto spread = PsClient::Connect(spread_options);
  auto whole = PsClient::Connect(whole_options);
  ASSERT_TRUE(spread.ok() && whole.ok());
  ASSERT_TRUE((*spread)->spreads_shards());
  constexpr int kSteps = 3;
  TakeTurns(**spread, **whole, kSteps);
  if (HasFatalFailure()) return;
  EXPECT_EQ((*spread)->wire_stats().streamed_shard_pushes, 3u * kSteps);
  EXPECT_GT((*spread)->wire_stats().push_bytes, 4u * (*spread)->total_elements() * kSteps);
  auto stats = (*spread)->Stats();
  ASSERT_TRUE(stats.ok());
  for (const ShardStats& st : stats->shards) {
    EXPECT_EQ(st.gradients_applied, 2u * kSteps);
    EXPECT_EQ(st.version, 2u * kSteps);  // one update per push, not per part
    EXPECT_EQ(st.gradients_rejected, 0u);
  }
}

// A spread push while one of the two shards is stopped: the push fails naming that shard once
// the retry budget is spent, and the running shard, which judges its own part, applied it.
TEST_F(PushStreamTest, ASpreadPushToAStoppedShardFailsNamingItWhileTheOtherShardAppliesItsPart) {
  StartShards(2, "async", 1);
  ClientOptions options = Options();
  options.tensors = {{"w", 600000}};  // 2.4 MB, 1.2 MB per shard
  options.rpc_timeout = absl::Seconds(10);
  options.retry_budget = absl::Seconds(1);
  std::unique_ptr<PsClient> client = InitializedClient(options);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->spreads_shards());
  const size_t n = client->total_elements();
  std::vector<float> w(n);
  const std::vector<float> g(n, 1.0f);
  ASSERT_TRUE(client->Pull(0, w).ok());
  ASSERT_TRUE(client->Push(0, g, 1, 0.0f).ok());  // both streams open
  ASSERT_TRUE(client->Pull(1, w).ok());
  servers_[1]->Shutdown();
  const absl::Status st = client->Push(1, g, 1, 0.0f);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("shard 1"));
  EXPECT_EQ(servers_[0]->shard().DebugState().gradients_applied, 2u);
  EXPECT_EQ(servers_[1]->shard().DebugState().gradients_applied, 1u);
}

// `push` cut into `parts` messages the way the client cuts it.
std::vector<proto::PushRequest> Split(const proto::PushRequest& push, int parts) {
  std::vector<proto::PushRequest> out;
  const int n = push.chunks_size();
  for (int p = 0; p < parts; ++p) {
    proto::PushRequest part = push;
    part.clear_chunks();
    part.set_part(p);
    part.set_parts(parts);
    if (p > 0) {
      part.clear_job_id();
      part.clear_token();
    }
    for (int c = n * p / parts; c < n * (p + 1) / parts; ++c) *part.add_chunks() = push.chunks(c);
    out.push_back(std::move(part));
  }
  return out;
}

TEST_F(PushStreamTest, PushInPartsIsAppliedOnceWholeOrRefusedWhole) {
  std::unique_ptr<PsClient> client = PulledClient();
  ASSERT_NE(client, nullptr);
  ParameterShard& shard = servers_[0]->shard();
  const ShardState before = shard.DebugState();
  auto raw = OpenRaw(0);
  proto::PushStreamResponse answer;

  // A NaN in the last part: the push is answered once, after it, refused whole.
  proto::PushRequest bad = FirstPush(*client, 0, 0, 1.0f);
  std::vector<proto::PushRequest> bad_parts = Split(bad, 3);
  std::string* data = bad_parts[2].mutable_chunks(0)->mutable_gradient()->mutable_data();
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(data->data(), &inf, sizeof inf);
  for (const proto::PushRequest& part : bad_parts) ASSERT_TRUE(raw->rw->Write(part));
  ASSERT_TRUE(raw->rw->Read(&answer));
  EXPECT_EQ(answer.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(answer.message(), HasSubstr("NaN or Inf"));
  EXPECT_EQ(answer.step(), 0);
  EXPECT_TRUE(shard.DebugState() == before);

  // The same push, good, in 3 parts: one answer, one update of every chunk.
  for (const proto::PushRequest& part : Split(ShardPush(*client, 0, 0, 2.0f), 3)) {
    ASSERT_TRUE(raw->rw->Write(part));
  }
  ASSERT_TRUE(raw->rw->Read(&answer));
  EXPECT_EQ(answer.code(), 0) << answer.message();
  EXPECT_EQ(answer.version(), 1u);
  const ShardState after = shard.DebugState();
  EXPECT_EQ(after.version, 1u);
  for (float v : after.weights) ASSERT_FLOAT_EQ(v, 1.0f - 0.5f * 2.0f);
  ASSERT_TRUE(raw->rw->WritesDone());
  EXPECT_FALSE(raw->rw->Read(&answer));
  EXPECT_TRUE(raw->rw->Finish().ok());

  auto stats = client->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->shards[0].gradients_applied, 1u);
  EXPECT_EQ(stats->shards[0].gradients_rejected, 1u);
  EXPECT_EQ(stats->shards[0].gradients_rejected_nonfinite, 1u);

  // The unary Push takes whole pushes only.
  proto::PushRequest unary = Split(bad, 2)[0];
  absl::StatusOr<proto::PushResponse> refused = shard.Push(unary);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("PushStream"));
  EXPECT_EQ(shard.DebugState().version, 1u);
}

TEST_F(PushStreamTest, PartsThatDoNotContinueThePushEndTheStreamWithNothingApplied) {
  std::unique_ptr<PsClient> client = PulledClient();
  ASSERT_NE(client, nullptr);
  ParameterShard& shard = servers_[0]->shard();
  const ShardState before = shard.DebugState();
  const std::vector<proto::PushRequest> parts = Split(FirstPush(*client, 0, 0, 1.0f), 2);
  proto::PushRequest other_step = parts[1];
  other_step.set_step(1);
  proto::PushRequest foreign_chunk = parts[1];
  *foreign_chunk.mutable_chunks(0) = parts[0].chunks(0);
  proto::PushRequest second_first = parts[1];  // with the stream's credentials
  second_first.set_job_id(testing::kTestJob);
  second_first.set_token(testing::kTestToken);
  proto::PushRequest too_many = parts[0];
  too_many.set_parts(1000);
  struct Case {
    std::vector<proto::PushRequest> messages;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{{{second_first}, "does not continue"},
                                         {{parts[0], other_step}, "does not continue"},
                                         {{parts[0], parts[0]}, "does not continue"},
                                         {{parts[0], foreign_chunk}, "another part"},
                                         {{too_many}, "parts"}}) {
    auto raw = OpenRaw(0);
    for (const proto::PushRequest& m : c.messages) raw->rw->Write(m);
    proto::PushStreamResponse answer;
    EXPECT_FALSE(raw->rw->Read(&answer)) << "no answer: the stream ends";
    grpc::Status finished = raw->rw->Finish();
    EXPECT_EQ(finished.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.says;
    EXPECT_THAT(finished.error_message(), HasSubstr(c.says));
    EXPECT_TRUE(shard.DebugState() == before) << c.says;
  }
}

TEST_F(PushStreamTest, StreamWithAWrongTokenIsEndedUnauthenticatedAndChangesNothing) {
  StartShards(1);
  std::unique_ptr<PsClient> client = InitializedClient(Options());
  ASSERT_NE(client, nullptr);
  const ShardState before = servers_[0]->shard().DebugState();
  for (const auto& [job, token, code] :
       {std::tuple<std::string, std::string, grpc::StatusCode>{"job-a", "guess",
                                                               grpc::StatusCode::UNAUTHENTICATED},
        {"job-a", "", grpc::StatusCode::UNAUTHENTICATED},
        {"job-b", "t0ken", grpc::StatusCode::PERMISSION_DENIED}}) {
    auto raw = OpenRaw(0);
    proto::PushRequest r = ShardPush(*client, 0, 0, 1.0f);
    r.set_job_id(job);
    r.set_token(token);
    raw->rw->Write(r);  // may already fail if the shard ended the stream first
    proto::PushStreamResponse answer;
    EXPECT_FALSE(raw->rw->Read(&answer));
    grpc::Status st = raw->rw->Finish();
    EXPECT_EQ(st.error_code(), code) << st.error_message();
    EXPECT_TRUE(servers_[0]->shard().DebugState() == before);
  }
}

TEST_F(PushStreamTest, ShutdownEndsOpenStreamsWithUnavailable) {
  StartShards(1);
  std::unique_ptr<PsClient> client = InitializedClient(Options());
  ASSERT_NE(client, nullptr);
  const size_t n = client->total_elements();
  std::vector<float> w(n);
  ASSERT_TRUE(client->Pull(0, w).ok());
  ASSERT_TRUE(client->Push(0, std::vector<float>(n, 1.0f), 1, 0.0f).ok());  // its stream is open
  auto raw = OpenRaw(0);
  proto::PushRequest r = FirstPush(*client, 0, 1, 1.0f);
  ASSERT_TRUE(raw->rw->Write(r));
  proto::PushStreamResponse answer;
  ASSERT_TRUE(raw->rw->Read(&answer));
  ASSERT_EQ(answer.code(), 0) << answer.message();
  servers_[0]->Shutdown();
  EXPECT_FALSE(raw->rw->Read(&answer));
  grpc::Status st = raw->rw->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("shutting down"));
}

TEST_F(PushStreamTest, HardsyncOverStreamsWaitsForEveryLearner) {
  StartShards(2, "hardsync", 2);
  auto a = PsClient::Connect(Options());
  auto b = PsClient::Connect(Options());
  ASSERT_TRUE(a.ok() && b.ok());
  const size_t n = (*a)->total_elements();
  ASSERT_TRUE((*a)->Init(std::vector<float>(n, 1.0f)).ok());
  std::vector<float> wa(n), wb(n);
  for (int t = 0; t < 3; ++t) {
    ASSERT_TRUE((*a)->Pull(t, wa).ok());
    ASSERT_TRUE((*b)->Pull(t, wb).ok());
    EXPECT_EQ(wa, wb);
    ASSERT_TRUE((*a)->Push(t, std::vector<float>(n, 1.0f), 1, 0.0f).ok());
    ASSERT_TRUE((*b)->Push(t, std::vector<float>(n, 3.0f), 1, 0.0f).ok());
  }
  ASSERT_TRUE((*a)->Pull(3, wa).ok());
  for (float v : wa) ASSERT_FLOAT_EQ(v, 1.0f - 3 * 0.5f * 2.0f);
  EXPECT_EQ((*a)->wire_stats().streamed_shard_pushes, 6u);
  auto stats = (*a)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->total.version, 3u);
  EXPECT_EQ(stats->total.staleness_max, 0u);
}

// A shard as an older build served it: every method but PushStream (gRPC answers that one
// UNIMPLEMENTED). With `silent_streams`, PushStream exists but never answers a push.
class OldShardService : public proto::ParameterServer::CallbackService {
 public:
  explicit OldShardService(ParameterShard* shard) : shard_(shard) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const proto::RegisterRequest* request,
                                     proto::RegisterResponse* response) override {
    absl::StatusOr<proto::RegisterResponse> result = shard_->Register(*request);
    if (result.ok()) result->clear_parts();  // knows nothing of parts
    return Answer(ctx, std::move(result), response);
  }
  grpc::ServerUnaryReactor* Init(grpc::CallbackServerContext* ctx,
                                 const proto::InitRequest* request,
                                 proto::InitResponse* response) override {
    return Answer(ctx, shard_->Init(*request), response);
  }
  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* ctx,
                                 const proto::PushRequest* request,
                                 proto::PushResponse* response) override {
    ++unary_pushes;
    return Answer(ctx, shard_->Push(*request), response);
  }
  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* ctx,
                                 const proto::PullRequest* request,
                                 proto::PullResponse* response) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    proto::PullRequest whole = *request;  // an old shard does not see PullRequest.part/parts
    whole.clear_part();
    whole.clear_parts();
    // Async: every pull is answered before Pull returns.
    shard_->Pull(whole, [reactor, response](absl::StatusOr<PullAnswer> r) {
      if (r.ok()) *response = r->Materialize();
      reactor->Finish(ToGrpcStatus(r.status()));
    });
    return reactor;
  }

  std::atomic<int> unary_pushes{0};

 private:
  template <typename Response>
  static grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx,
                                          absl::StatusOr<Response> result, Response* response) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    if (result.ok()) *response = std::move(*result);
    reactor->Finish(ToGrpcStatus(result.status()));
    return reactor;
  }

  ParameterShard* const shard_;
};

// Reads pushes and never answers them, until the client goes away.
class SilentStreamService final : public OldShardService {
 public:
  using OldShardService::OldShardService;
  grpc::ServerBidiReactor<proto::PushRequest, proto::PushStreamResponse>* PushStream(
      grpc::CallbackServerContext*) override {
    class Silent final
        : public grpc::ServerBidiReactor<proto::PushRequest, proto::PushStreamResponse> {
     public:
      Silent() { StartRead(&request_); }
      void OnReadDone(bool ok) override {
        if (ok) {
          StartRead(&request_);
        } else {
          Finish(grpc::Status::OK);
        }
      }
      void OnDone() override { delete this; }

     private:
      proto::PushRequest request_;
    };
    return new Silent();
  }
};

class OldShardTest : public ::testing::Test {
 protected:
  template <typename Service>
  void Start() {
    ShardConfig config;
    config.job_id = "job-a";
    config.token = "t0ken";
    config.lr = 0.5f;
    auto shard = ParameterShard::Create(config, &clock_);
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = std::move(*shard);
    service_ = std::make_unique<Service>(shard_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr && port != 0);
    endpoint_ = "127.0.0.1:" + std::to_string(port);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  ClientOptions Options() const {
    ClientOptions o;
    o.endpoints = {endpoint_};
    o.job_id = "job-a";
    o.token = "t0ken";
    o.tensors = {{"w", 300}};
    o.chunk_size = 128;
    o.rpc_timeout = absl::Seconds(10);
    o.retry_budget = absl::Seconds(1);
    return o;
  }

  RealClock clock_;
  std::unique_ptr<ParameterShard> shard_;
  std::unique_ptr<OldShardService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string endpoint_;
};

TEST_F(OldShardTest, ClientFallsBackToUnaryPushOnAShardWithoutStreams) {
  Start<OldShardService>();
  ClientOptions options = Options();
  options.pull_part_bytes = 256;  // parts, were the shard to take them (it does not say it does)
  options.push_part_bytes = 256;
  std::unique_ptr<PsClient> client = InitializedClient(options);
  ASSERT_NE(client, nullptr);
  const size_t n = client->total_elements();
  std::vector<float> w(n);
  for (int t = 0; t < 3; ++t) {
    ASSERT_TRUE(client->Pull(t, w).ok());
    absl::Status st = client->Push(t, std::vector<float>(n, 1.0f), 1, 0.0f);
    ASSERT_TRUE(st.ok()) << st;
  }
  EXPECT_EQ(service_->unary_pushes.load(), 3);
  EXPECT_EQ(client->wire_stats().streamed_shard_pushes, 0u);
  ASSERT_TRUE(client->Pull(3, w).ok());
  for (float v : w) ASSERT_FLOAT_EQ(v, 1.0f - 3 * 0.5f);
}

TEST_F(OldShardTest, UnansweredStreamPushMissesItsDeadlineAndTheNextPushStillWorks) {
  Start<SilentStreamService>();
  ClientOptions o = Options();
  o.rpc_timeout = absl::Milliseconds(300);
  std::unique_ptr<PsClient> client = InitializedClient(o);
  ASSERT_NE(client, nullptr);
  const size_t n = client->total_elements();
  std::vector<float> w(n);
  ASSERT_TRUE(client->Pull(0, w).ok());
  const absl::Time start = absl::Now();
  absl::Status st = client->Push(0, std::vector<float>(n, 1.0f), 1, 0.0f);
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(shard_->DebugState().version, 0u);  // the silent stream applied nothing
  // The next push opens a new stream, which is just as silent: the same clear error, no hang.
  st = client->Push(1, std::vector<float>(n, 1.0f), 1, 0.0f);
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
}

}  // namespace
}  // namespace orrery::server
