// A shard's Prometheus /metrics over real HTTP: the counters of pushes, pulls, applied and
// rejected gradients and the staleness histogram follow what the shard did.
#include "server/shard_metrics.h"

#include <limits>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "server/client.h"
#include "server/shard_server.h"
#include "tests/util/metrics_scrape.h"

namespace orrery::server {
namespace {

using ::testing::HasSubstr;

TEST(ShardMetricsTest, ScrapeShowsPushesPullsRejectionsAndStaleness) {
  ServerOptions o;
  o.job_id = "metrics-job";
  o.token = "tk";
  o.protocol = "async";
  o.metrics_listen = "127.0.0.1:0";
  auto server = ShardServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_FALSE((*server)->metrics_address().empty());

  ClientOptions c;
  c.endpoints = {(*server)->address()};
  c.job_id = "metrics-job";
  c.token = "tk";
  c.tensors = {{"w", 50}};
  auto client = PsClient::Connect(c);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Init(std::vector<float>(50, 0.0f)).ok());
  std::vector<float> w(50), g(50, 0.1f);
  for (int step = 0; step < 3; ++step) {
    ASSERT_TRUE((*client)->Pull(step, w).ok());
    ASSERT_TRUE((*client)->Push(step, g, 8, 1.0f).ok());
  }
  ASSERT_TRUE((*client)->Pull(3, w).ok());
  g[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE((*client)->Push(3, g, 8, 1.0f).ok());

  const std::string text = ::orrery::testing::ScrapeMetrics((*server)->metrics_address());
  ASSERT_THAT(text, HasSubstr("200 OK"));
  const std::string labels = "{job=\"metrics-job\",shard=\"0\"}";
  EXPECT_THAT(text, HasSubstr("orrery_shard_version" + labels + " 3"));
  EXPECT_THAT(text, HasSubstr("orrery_shard_pushes_total" + labels + " 3"));
  EXPECT_THAT(text, HasSubstr("orrery_shard_gradients_applied_total" + labels + " 3"));
  EXPECT_THAT(text, HasSubstr("orrery_shard_samples_applied_total" + labels + " 24"));
  EXPECT_THAT(text, HasSubstr("orrery_shard_gradients_rejected_total{job=\"metrics-job\",shard=\"0\",reason=\"nonfinite\"} 1"));
  EXPECT_THAT(text, HasSubstr("orrery_shard_staleness_count" + labels + " 3"));
  // Every accepted gradient followed a pull; the NaN one was refused and has no age.
  EXPECT_THAT(text, HasSubstr("orrery_shard_gradient_age_seconds_count" + labels + " 3"));
  EXPECT_THAT(text, HasSubstr("orrery_shard_gradient_age_max_seconds" + labels));
  EXPECT_THAT(text, HasSubstr("orrery_shard_staleness_bucket{job=\"metrics-job\",shard=\"0\",le=\"0\"} 3"));
  EXPECT_THAT(text, HasSubstr("orrery_shard_pulls_total" + labels));
}

TEST(ShardMetricsTest, AnAddressInUseIsAnErrorNamingIt) {
  ServerOptions o;
  o.job_id = "metrics-job";
  o.metrics_listen = "127.0.0.1:0";
  auto first = ShardServer::Start(o);
  ASSERT_TRUE(first.ok()) << first.status();
  o.metrics_listen = (*first)->metrics_address();
  auto second = ShardServer::Start(o);
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(o.metrics_listen));
}

}  // namespace
}  // namespace orrery::server
