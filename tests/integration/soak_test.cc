// Soak: 32 concurrent learner clients against 2 real `orrery server` processes for a bounded
// time (ORRERY_SOAK_SECONDS, default 8 in `make test`; `make soak` runs 300). Checks that no call
// fails except the deliberately bad pushes, that every push is accounted for on every shard
// (sent = applied + rejected), and that the servers' memory stays within a stated bound.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/client.h"
#include "tests/util/process_io.h"

namespace orrery::server {
namespace {

using ::orrery::testing::ReadLine;

constexpr int kLearners = 32;
constexpr int kShards = 2;
constexpr uint64_t kBigTensor = 1 << 18;  // 1 MiB of float32: 16 chunks over both shards
constexpr int kBadEvery = 97;             // every 97th push of a learner carries a NaN
// Growth of a shard's resident memory from the end of warm-up to the end of the run. The model
// is 1 MiB per copy; a leak of even a few bytes per push over ~10^5 pushes would exceed this.
constexpr int64_t kRssGrowthBoundKb = 64 * 1024;

struct ServerProcess {
  pid_t pid = -1;
  int out = -1;
  std::string endpoint;
};

ServerProcess StartServer(int shard) {
  const ::orrery::testing::PipedChild child = ::orrery::testing::SpawnPiped(
      {ORRERY_BINARY, "server", "--listen", "127.0.0.1:0", "--shard", absl::StrCat(shard), "--shards",
       absl::StrCat(kShards), "--job", "soak", "--token", "soak-token", "--protocol", "async", "--learners",
       absl::StrCat(kLearners), "--lr", "0.0001"});
  ServerProcess p;
  p.pid = child.pid;
  p.out = child.fd;
  if (child.pid < 0) return p;
  const std::string line = ReadLine(child.fd, absl::Seconds(30));
  if (absl::StartsWith(line, "ORRERY_SERVER_READY ")) p.endpoint = line.substr(20);
  return p;
}

int64_t RssKb(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      int64_t kb = 0;
      std::string digits;
      for (char c : line) if (c >= '0' && c <= '9') digits.push_back(c);
      if (absl::SimpleAtoi(digits, &kb)) return kb;
    }
  }
  return -1;
}

double SoakSeconds() {
  const char* env = std::getenv("ORRERY_SOAK_SECONDS");
  double s = 8;
  if (env != nullptr && !absl::SimpleAtod(env, &s)) s = 8;
  return std::clamp(s, 1.0, 3600.0);
}

TEST(SoakTest, ThirtyTwoLearnersTwoShardsEveryPushAccountedMemoryBounded) {
  std::vector<ServerProcess> servers;
  for (int s = 0; s < kShards; ++s) servers.push_back(StartServer(s));
  struct Reaper {
    std::vector<ServerProcess>* servers;
    ~Reaper() {
      for (auto& p : *servers) {
        if (p.pid > 0) {
          kill(p.pid, SIGKILL);
          waitpid(p.pid, nullptr, 0);
        }
      }
    }
  } reaper{&servers};
  std::vector<std::string> endpoints;
  for (auto& p : servers) {
    ASSERT_FALSE(p.endpoint.empty()) << "a shard did not start";
    endpoints.push_back(p.endpoint);
  }

  ClientOptions base;
  base.endpoints = endpoints;
  base.job_id = std::string("soak");
  base.token = std::string("soak-token");
  base.tensors = {{"big", kBigTensor}, {"small", 1000}};
  base.rpc_timeout = absl::Seconds(30);
  base.pull_timeout = absl::Seconds(30);

  const double seconds = SoakSeconds();
  const absl::Time start = absl::Now();
  const absl::Time warm = start + absl::Seconds(seconds * 0.25);
  const absl::Time end = start + absl::Seconds(seconds);
  std::atomic<int64_t> sent{0}, ok{0}, bad_sent{0}, unexpected{0};
  std::atomic<int> ready{0};
  std::string first_error;
  std::mutex error_mu;
  std::vector<std::thread> threads;
  for (int i = 0; i < kLearners; ++i) {
    threads.emplace_back([&, i] {
      auto fail = [&](const absl::Status& st) {
        ++unexpected;
        std::lock_guard<std::mutex> lock(error_mu);
        if (first_error.empty()) first_error = absl::StrCat("learner ", i, ": ", st.ToString());
      };
      absl::StatusOr<std::unique_ptr<PsClient>> ps = PsClient::Connect(base);
      if (!ps.ok()) return fail(ps.status());
      const uint64_t n = (*ps)->total_elements();
      std::vector<float> weights(n), grads(n);
      if (absl::Status st = (*ps)->Init(std::vector<float>(n, 0.5f)); !st.ok()) return fail(st);
      ++ready;
      // Bounded by time and by count.
      for (int64_t step = 0; step < 10'000'000 && absl::Now() < end; ++step) {
        if (absl::Status st = (*ps)->Pull(step, weights); !st.ok()) return fail(st);
        for (uint64_t k = 0; k < n; k += 4099) grads[k] = 0.001f * static_cast<float>((k + i) % 7);
        const bool bad = (step + 1) % kBadEvery == 0;
        // The NaN goes into the first element, whose chunk lives on exactly one shard.
        grads[0] = bad ? std::numeric_limits<float>::quiet_NaN() : 0.001f;
        ++sent;
        if (bad) ++bad_sent;
        absl::Status st = (*ps)->Push(step, grads, 16, 1.0f);
        if (st.ok()) {
          ++ok;
        } else if (!(bad && absl::IsInvalidArgument(st))) {
          return fail(st);
        }
      }
      (*ps)->Leave().IgnoreError();
    });
  }
  // Sample memory after warm-up, while the learners run (bounded wait, no sleeps as sync: poll
  // the clock with a short timeout).
  while (absl::Now() < warm) {
    pollfd none{-1, 0, 0};
    poll(&none, 0, 50);
  }
  std::vector<int64_t> rss_warm;
  for (auto& p : servers) rss_warm.push_back(RssKb(p.pid));
  for (auto& t : threads) t.join();
  std::vector<int64_t> rss_end;
  for (auto& p : servers) rss_end.push_back(RssKb(p.pid));

  EXPECT_EQ(unexpected.load(), 0) << first_error;
  EXPECT_EQ(ready.load(), kLearners);
  ASSERT_GT(sent.load(), kLearners * 10) << "too few pushes to mean anything";

  ClientOptions observer = base;
  observer.learner_id = -2;
  auto ps = PsClient::Connect(observer);
  ASSERT_TRUE(ps.ok()) << ps.status();
  auto stats = (*ps)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  uint64_t rejected_total = 0;
  for (const ShardStats& s : stats->shards) {
    SCOPED_TRACE(absl::StrCat("shard ", s.shard));
    // Every push reached every shard: applied here or rejected here.
    EXPECT_EQ(s.pushes + s.gradients_rejected, static_cast<uint64_t>(sent.load()));
    EXPECT_EQ(s.gradients_applied, s.pushes);  // async: each accepted gradient is applied
    rejected_total += s.gradients_rejected;
    EXPECT_EQ(s.gradients_rejected, s.gradients_rejected_nonfinite);
  }
  // Each bad push is rejected by exactly the one shard that holds element 0.
  EXPECT_EQ(rejected_total, static_cast<uint64_t>(bad_sent.load()));
  EXPECT_EQ(static_cast<uint64_t>(ok.load()) + bad_sent.load(), static_cast<uint64_t>(sent.load()));

  for (int s = 0; s < kShards; ++s) {
    ASSERT_GT(rss_warm[s], 0);
    EXPECT_LT(rss_end[s] - rss_warm[s], kRssGrowthBoundKb)
        << "shard " << s << " grew from " << rss_warm[s] << " kB to " << rss_end[s] << " kB";
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("soak: %.0f s, %lld pushes (%lld bad), %.0f pushes/s, shard RSS kB warm %lld/%lld end %lld/%lld\n",
              secs, static_cast<long long>(sent.load()), static_cast<long long>(bad_sent.load()),
              sent.load() / secs, static_cast<long long>(rss_warm[0]), static_cast<long long>(rss_warm[1]),
              static_cast<long long>(rss_end[0]), static_cast<long long>(rss_end[1]));
}

}  // namespace
}  // namespace orrery::server
