// Real shards (`ShardServer`) on 127.0.0.1 for the server tests, and client options that reach
// them: job "job-a", token "t0ken", small chunks so that every tensor spans several.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/time/time.h"
#include "server/client.h"
#include "server/shard_server.h"

namespace orrery::server::testing {

inline constexpr char kTestJob[] = "job-a";
inline constexpr char kTestToken[] = "t0ken";

// Options of shard `shard` of `shards`, on a port the OS chooses.
inline ServerOptions TestShardOptions(int shard, int shards, const std::string& protocol, int learners,
                                      float lr = 0.5f) {
  ServerOptions o;
  o.listen_address = "127.0.0.1:0";
  o.shard_index = shard;
  o.num_shards = shards;
  o.job_id = kTestJob;
  o.token = kTestToken;
  o.protocol = protocol;
  o.learners = learners;
  o.lr = lr;
  o.learner_timeout_seconds = 30;
  return o;
}

// Starts one shard with `o` (a test failure if it cannot), adding it to `servers` and `endpoints`.
inline void StartTestShard(const ServerOptions& o, std::vector<std::unique_ptr<ShardServer>>* servers,
                           std::vector<std::string>* endpoints) {
  auto server = ShardServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  endpoints->push_back((*server)->address());
  servers->push_back(std::move(*server));
}

inline ClientOptions TestClientOptions(const std::vector<std::string>& endpoints, int learner_id,
                                       std::vector<TensorShape> tensors) {
  ClientOptions o;
  o.endpoints = endpoints;
  o.job_id = kTestJob;
  o.token = kTestToken;
  o.learner_id = learner_id;
  o.tensors = std::move(tensors);
  o.chunk_size = 256;
  o.rpc_timeout = absl::Seconds(10);
  o.pull_timeout = absl::Seconds(20);
  o.retry_budget = absl::Seconds(2);
  return o;
}

}  // namespace orrery::server::testing
