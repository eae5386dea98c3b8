// PsClient::Push sends FP32 gradients from the caller's buffer without copying them: these tests
// overwrite the buffer with NaN as soon as Push returns, against a real `orrery server` process,
// and check that the shard applied exactly the gradients pushed, also after a push that a stopped
// shard left queued on the connection.
#include <signal.h>

#include <cmath>
#include <chrono>
#include <filesystem>
#include <future>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "scheduler/backends/local_backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/line_waiter.h"
#include "server/client.h"

namespace orrery::scheduler {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

class PushLendingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(std::filesystem::temp_directory_path().string(), "/orrery-lend-", getpid(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    ProcessSpec spec;
    spec.role = "server";
    spec.argv = {ORRERY_BINARY, "server", "--listen", "127.0.0.1:0", "--shard", "0", "--shards", "1",
                 "--job", "j", "--protocol", "async", "--learners", "1", "--lr", "0.5"};
    spec.log_path = dir_ + "/server.log";
    absl::StatusOr<ProcessId> shard = backend_.Start(spec);
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = *shard;
    absl::StatusOr<std::vector<LineMatch>> ready =
        WaitForLines(loop_, backend_, {shard_}, R"(^ORRERY_SERVER_READY (\S+))", absl::Seconds(30));
    ASSERT_TRUE(ready.ok()) << ready.status();
    address_ = (*ready)[0].groups[1];
  }
  void TearDown() override {
    client_.reset();
    backend_.Signal(shard_, SIGCONT).IgnoreError();
    backend_.Signal(shard_, SIGKILL).IgnoreError();
    std::filesystem::remove_all(dir_);
  }

  // A client of a model of one tensor of `elements` floats, all 0.5 at first. The weights are
  // sent by a client of its own with a generous deadline: a short `rpc_timeout`, which the tests
  // of a stopped shard want for their push, is too short for a 64 MB Init on a loaded machine.
  void Connect(size_t elements, absl::Duration rpc_timeout, proto::Encoding wire = proto::FP32) {
    server::ClientOptions co;
    co.wire = wire;
    co.endpoints = {address_};
    co.job_id = std::string("j");
    co.tensors = {{"w", elements}};
    co.chunk_size = 16384;  // 64 KB payloads: sent from the caller's buffer
    co.rpc_timeout = absl::Seconds(60);
    co.retry_budget = absl::Seconds(10);
    {
      absl::StatusOr<std::unique_ptr<server::PsClient>> init = server::PsClient::Connect(co);
      ASSERT_TRUE(init.ok()) << init.status();
      const absl::Status st = (*init)->Init(std::vector<float>(elements, 0.5f));
      ASSERT_TRUE(st.ok()) << st;
    }
    co.rpc_timeout = rpc_timeout;
    absl::StatusOr<std::unique_ptr<server::PsClient>> client = server::PsClient::Connect(co);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  // Every weight equals `want` (exactly: the arithmetic is on dyadic values).
  void ExpectWeights(std::vector<float>& w, int64_t clock, float want) {
    ASSERT_TRUE(client_->Pull(clock, w).ok());
    size_t wrong = 0;
    for (float v : w) wrong += v != want;
    EXPECT_EQ(wrong, 0u) << "weights other than " << want << ", e.g. w[0] = " << w[0];
  }

  EventLoop loop_;
  LocalBackend backend_{loop_};
  std::string dir_;
  ProcessId shard_ = -1;
  std::string address_;
  std::unique_ptr<server::PsClient> client_;
};

TEST_F(PushLendingTest, TheShardAppliesWhatWasPushedThoughTheBufferIsOverwrittenAtOnce) {
  constexpr size_t kElements = 1 << 20;  // 4 MB: pushed in parts on the push stream
  Connect(kElements, absl::Seconds(30));
  std::vector<float> w(kElements), g(kElements);
  for (int step = 0; step < 20; ++step) {
    ASSERT_TRUE(client_->Pull(step, w).ok());
    std::fill(g.begin(), g.end(), 0.25f);
    ASSERT_TRUE(client_->Push(step, g, 1, 0.0f).ok()) << "step " << step;
    std::fill(g.begin(), g.end(), kNaN);  // the learner's next backward pass, at once
  }
  ExpectWeights(w, 20, 0.5f - 20 * 0.5f * 0.25f);
  absl::StatusOr<server::PsStats> stats = client_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->total.gradients_rejected_nonfinite, 0u);
  EXPECT_EQ(stats->total.gradients_applied, 20u);
  EXPECT_EQ(client_->wire_stats().connection_resets, 0u);
}

// A shard that stops reading leaves part of a large push queued on the connection when the
// push's deadline passes: Push closes the connection before returning (unless gRPC let go of the
// rest first), so nothing of the buffer, overwritten next, is sent once the shard reads again;
// the client carries on over a new one.
TEST_F(PushLendingTest, APushAStoppedShardLeftQueuedIsNotSentFromTheOverwrittenBuffer) {
  constexpr size_t kElements = 16 << 20;  // 64 MB: more than the connection's buffers hold
  Connect(kElements, absl::Seconds(3));  // the deadline of the stuck push, and of the one after
  std::vector<float> w(kElements), g(kElements, 0.25f);
  ASSERT_TRUE(client_->Pull(0, w).ok());
  ASSERT_TRUE(backend_.Signal(shard_, SIGSTOP).ok());
  const absl::Status stuck = client_->Push(0, g, 1, 0.0f);
  EXPECT_FALSE(stuck.ok());
  // Usually gRPC still holds part of the push (queued behind the stopped shard) and Push closes
  // the connection; on a loaded machine gRPC has now and then dropped the unsent rest of the
  // cancelled call itself within Push's second of waiting, and no reset was needed.
  EXPECT_LE(client_->wire_stats().connection_resets, 1u);
  std::fill(g.begin(), g.end(), kNaN);
  ASSERT_TRUE(backend_.Signal(shard_, SIGCONT).ok());
  // Whatever the shard received of the stopped push before its connection closed was not a
  // whole message: nothing was applied, and no NaN reached it.
  ExpectWeights(w, 0, 0.5f);
  std::fill(g.begin(), g.end(), 0.25f);
  ASSERT_TRUE(client_->Push(0, g, 1, 0.0f).ok());
  std::fill(g.begin(), g.end(), kNaN);
  ExpectWeights(w, 1, 0.5f - 0.5f * 0.25f);
  absl::StatusOr<server::PsStats> stats = client_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->total.gradients_rejected_nonfinite, 0u);
}

// A FIXED16 push is encoded into its message, so Push does not wait for gRPC to let go of it: a
// push stream can be left stuck behind a stopped shard. Destroying the client then ends that
// connection instead of waiting for gRPC, which would wait for the shard.
TEST_F(PushLendingTest, AClientWithAPushStuckBehindAStoppedShardIsDestroyedWithoutWaitingForTheShard) {
  constexpr size_t kElements = 16 << 20;  // 32 MB as FIXED16: more than the connection's buffers
  Connect(kElements, absl::Seconds(1), proto::FIXED16);
  std::vector<float> w(kElements), g(kElements, 0.25f);
  ASSERT_TRUE(client_->Pull(0, w).ok());
  ASSERT_TRUE(backend_.Signal(shard_, SIGSTOP).ok());
  EXPECT_FALSE(client_->Push(0, g, 1, 0.0f).ok());
  std::future<void> destroyed = std::async(std::launch::async, [this] { client_.reset(); });
  const bool in_time = destroyed.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  ASSERT_TRUE(backend_.Signal(shard_, SIGCONT).ok());  // lets a hung destructor finish, too
  destroyed.wait();
  EXPECT_TRUE(in_time) << "the client's destructor waited for the stopped shard";
}

}  // namespace
}  // namespace orrery::scheduler
