// precision.wire: learners and real in-process shards exchange FIXED16 gradients and weights over
// gRPC, which halves the bytes of every push and pull.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "server/client.h"
#include "server/shard_server.h"
#include "server/tensor_codec.h"
#include "tests/server/shard_test_util.h"

namespace orrery::server {
namespace {

constexpr int kShards = 2;

// A fresh pair of async shards for two learners.
class Shards {
 public:
  // `weights`: the shards' --weights (fp32 | fixed16, FL 12).
  explicit Shards(const std::string& weights = "fp32") {
    for (int s = 0; s < kShards; ++s) {
      ServerOptions o;
      o.weights = weights;
      o.weights_fl = 12;
      o.shard_index = s;
      o.num_shards = kShards;
      o.job_id = "wire";
      o.protocol = "async";
      o.learners = 2;
      o.lr = 0.5f;
      auto server = ShardServer::Start(o);
      EXPECT_TRUE(server.ok()) << server.status();
      if (!server.ok()) return;
      endpoints_.push_back((*server)->address());
      servers_.push_back(std::move(*server));
    }
  }

  ClientOptions Options(proto::Encoding wire, int learner_id) const {
    ClientOptions o;
    o.endpoints = endpoints_;
    o.job_id = "wire";
    o.learner_id = learner_id;
    o.tensors = {{"fc1.w", 100000}, {"fc1.b", 100}, {"fc2.w", 20000}, {"fc2.b", 10}};
    o.chunk_size = 16384;
    o.rpc_timeout = absl::Seconds(10);
    o.pull_timeout = absl::Seconds(10);
    o.retry_budget = absl::Seconds(2);
    o.wire = wire;
    return o;
  }

  // The shards' weights, in the flat order of the layout.
  std::vector<float> Weights(const std::vector<float>& like) {
    ClientOptions o = Options(proto::FP32, -2);
    auto observer = PsClient::Connect(o);
    EXPECT_TRUE(observer.ok()) << observer.status();
    std::vector<float> w(like.size());
    EXPECT_TRUE((*observer)->Pull(0, w).ok());
    return w;
  }

 private:
  std::vector<std::string> endpoints_;
  std::vector<std::unique_ptr<ShardServer>> servers_;
};

std::vector<float> Wave(size_t n, float scale, float phase) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.01f * static_cast<float>(i) + phase);
  return v;
}

TEST(WireEncodingTest, Fixed16HalvesTheBytesOfEveryPushAndPull) {
  Shards shards;
  auto fp32 = PsClient::Connect(shards.Options(proto::FP32, 0));
  auto fixed = PsClient::Connect(shards.Options(proto::FIXED16, 1));
  ASSERT_TRUE(fp32.ok()) << fp32.status();
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  const size_t n = (*fp32)->total_elements();
  ASSERT_TRUE((*fp32)->Init(Wave(n, 0.5f, 0.0f)).ok());
  const std::vector<float> grad = Wave(n, 0.01f, 1.0f);
  std::vector<float> w(n);
  for (PsClient* ps : {fp32->get(), fixed->get()}) {
    for (int64_t t = 0; t < 3; ++t) {
      ASSERT_TRUE(ps->Pull(t, w).ok());
      ASSERT_TRUE(ps->Push(t, grad, 8, 1.0f).ok());
    }
  }
  const WireStats& a = (*fp32)->wire_stats();
  const WireStats& b = (*fixed)->wire_stats();
  ASSERT_EQ(a.pushes, 3u);
  ASSERT_EQ(b.pulls, 3u);
  const double push_ratio = static_cast<double>(b.push_bytes) / static_cast<double>(a.push_bytes);
  const double pull_ratio = static_cast<double>(b.pull_bytes) / static_cast<double>(a.pull_bytes);
  std::printf("bytes per push: FP32 %llu, FIXED16 %llu (%.4f); per pull: FP32 %llu, FIXED16 %llu "
              "(%.4f)\n",
              static_cast<unsigned long long>(a.push_bytes / 3),
              static_cast<unsigned long long>(b.push_bytes / 3), push_ratio,
              static_cast<unsigned long long>(a.pull_bytes / 3),
              static_cast<unsigned long long>(b.pull_bytes / 3), pull_ratio);
  // 2 bytes instead of 4 per element; the chunk ids and headers are the rest.
  EXPECT_NEAR(push_ratio, 0.5, 0.01);
  EXPECT_NEAR(pull_ratio, 0.5, 0.01);
  EXPECT_GE(a.push_bytes / 3, 4 * n);
  EXPECT_GE(b.push_bytes / 3, 2 * n);
}

TEST(WireEncodingTest, Fixed16PullIsTheShardsWeightsRoundedToNearest) {
  Shards shards;
  auto ps = PsClient::Connect(shards.Options(proto::FIXED16, 0));
  ASSERT_TRUE(ps.ok()) << ps.status();
  const size_t n = (*ps)->total_elements();
  std::vector<float> init = Wave(n, 0.7f, 0.3f);
  init[5] = 3.0f;  // the first chunk of fc1.w needs IL 3: FL 13 there, FL 15 elsewhere
  ASSERT_TRUE((*ps)->Init(init).ok());
  std::vector<float> w(n);
  ASSERT_TRUE((*ps)->Pull(0, w).ok());
  for (size_t i = 0; i < n; ++i) {
    const double half_eps = i < 16384 ? 0.5 / 8192 : 0.5 / 32768;
    ASSERT_NEAR(w[i], init[i], half_eps) << i;
  }
  EXPECT_EQ(w[5], 3.0f);
}

TEST(WireEncodingTest, Fixed16PushIsStochasticallyRoundedAndReproducible) {
  // A gradient of a third of an epsilon everywhere: rounding to nearest would send zeros.
  const float g = 1.0f / 3 / 32768;
  std::vector<std::vector<float>> runs;
  for (int run = 0; run < 2; ++run) {
    Shards shards;
    auto ps = PsClient::Connect(shards.Options(proto::FIXED16, 1));
    ASSERT_TRUE(ps.ok()) << ps.status();
    const size_t n = (*ps)->total_elements();
    ASSERT_TRUE((*ps)->Init(std::vector<float>(n, 0.0f)).ok());
    std::vector<float> w(n);
    ASSERT_TRUE((*ps)->Pull(0, w).ok());
    ASSERT_TRUE((*ps)->Push(7, std::vector<float>(n, g), 8, 1.0f).ok());
    runs.push_back(shards.Weights(w));
  }
  EXPECT_EQ(runs[0], runs[1]) << "same learner and step: the same draws";
  double mean = 0;
  for (float v : runs[0]) mean += v;
  mean /= static_cast<double>(runs[0].size());
  EXPECT_NEAR(mean, -0.5 * g, 0.02 * 0.5 * g) << "lr 0.5 times the gradient, in expectation";
}

// precision.weights and precision.wire both fixed16: the shards' master weights stay on the
// FL 12 grid after updates and travel exactly, in FL 12.
TEST(WireEncodingTest, Fixed16MasterWeightsArePulledExactly) {
  Shards shards("fixed16");
  auto ps = PsClient::Connect(shards.Options(proto::FIXED16, 0));
  ASSERT_TRUE(ps.ok()) << ps.status();
  const size_t n = (*ps)->total_elements();
  ASSERT_TRUE((*ps)->Init(Wave(n, 0.7f, 0.3f)).ok());
  std::vector<float> w(n);
  for (int64_t t = 0; t < 3; ++t) {
    ASSERT_TRUE((*ps)->Pull(t, w).ok());
    ASSERT_TRUE((*ps)->Push(t, Wave(n, 0.001f, 2.0f + t), 8, 1.0f).ok());
  }
  ASSERT_TRUE((*ps)->Pull(3, w).ok());
  const std::vector<float> exact = shards.Weights(w);  // FP32 pull by an observer
  EXPECT_EQ(w, exact);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(w[i] * 4096, std::round(w[i] * 4096)) << "weight " << i << " is off the grid";
  }
  const std::vector<float> init = Wave(n, 0.7f, 0.3f);
  EXPECT_NE(w, init) << "the pushes moved the weights";
}

TEST(WireEncodingTest, ShardAnswersAPullInTheRequestedEncoding) {
  testing::FakeLearners f(testing::SmallConfig("async", 1));
  f.Register(0);
  f.Init(0.75f);
  proto::PullRequest r;
  r.set_job_id("job");
  r.set_token("secret");
  r.set_learner_id(0);
  r.set_encoding(proto::FIXED16);
  absl::StatusOr<proto::PullResponse> answer = absl::UnknownError("not answered");
  f.shard().Pull(r, [&](absl::StatusOr<PullAnswer> a) { answer = testing::Materialized(std::move(a)); });
  ASSERT_TRUE(answer.ok()) << answer.status();
  for (const proto::PullChunk& c : answer->chunks()) {
    EXPECT_EQ(c.weights().encoding(), proto::FIXED16);
    EXPECT_EQ(c.weights().fractional_bits(), 15);
    EXPECT_EQ(c.weights().data().size(), 2u * c.weights().element_count());
    std::vector<float> v(c.weights().element_count());
    ASSERT_TRUE(DecodeFloats(c.weights(), v).ok());
    for (float x : v) EXPECT_EQ(x, 0.75f);
  }

  r.set_encoding(static_cast<proto::Encoding>(5));
  f.shard().Pull(r, [&](absl::StatusOr<PullAnswer> a) { answer = testing::Materialized(std::move(a)); });
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(answer.status().message().find("unknown encoding 5"), absl::string_view::npos)
      << answer.status();
}

TEST(WireEncodingTest, ClientRefusesBadWireOptions) {
  Shards shards;
  ClientOptions o = shards.Options(proto::ENCODING_UNSPECIFIED, 0);
  EXPECT_EQ(PsClient::Connect(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = shards.Options(proto::FIXED16, 0);
  o.wire_fl = 31;
  EXPECT_EQ(PsClient::Connect(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WireEncodingTest, NonFiniteGradientIsRefusedBeforeSendingNamingTheChunk) {
  Shards shards;
  auto ps = PsClient::Connect(shards.Options(proto::FIXED16, 0));
  ASSERT_TRUE(ps.ok()) << ps.status();
  const size_t n = (*ps)->total_elements();
  ASSERT_TRUE((*ps)->Init(std::vector<float>(n, 0.0f)).ok());
  std::vector<float> w(n);
  ASSERT_TRUE((*ps)->Pull(0, w).ok());
  std::vector<float> g(n, 0.0f);
  g[100001] = NAN;  // fc1.b element 1
  const absl::Status st = (*ps)->Push(0, g, 8, 1.0f);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("fc1.b/0"), absl::string_view::npos) << st;
  EXPECT_EQ((*ps)->wire_stats().pushes, 0u);
}

}  // namespace
}  // namespace orrery::server
