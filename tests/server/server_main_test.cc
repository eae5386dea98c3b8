// RunServer as a process: one READY line on stdout, a clean exit on SIGTERM, exit 1 on bad options.
#include "server/server_main.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "server/client.h"
#include "tests/util/process_io.h"

namespace orrery::server {
namespace {

using ::orrery::testing::ReadLine;

// Waits for `pid` to exit within `limit`; returns its wait status or -1.
int WaitExit(pid_t pid, absl::Duration limit) {
  const absl::Time end = absl::Now() + limit;
  int status = 0;
  while (absl::Now() < end) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    pollfd none{-1, 0, 0};
    poll(&none, 0, 5);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

TEST(RunServerTest, PrintsOneReadyLineServesAndStopsCleanlyOnSigterm) {
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  std::cout.flush();  // the child must not inherit (and later flush) our buffered output
  fflush(stdout);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    ServerOptions o;
    o.listen_address = "127.0.0.1:0";
    o.job_id = "j";
    o.token = "tk";
    _exit(RunServer(o));
  }
  close(out[1]);
  // Whatever fails below, the child does not outlive the test.
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (kill(pid, 0) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  } reaper{pid};
  const std::string line = ReadLine(out[0], absl::Seconds(20));
  ASSERT_TRUE(absl::StartsWith(line, "ORRERY_SERVER_READY 127.0.0.1:")) << line;
  const std::string endpoint = line.substr(std::string("ORRERY_SERVER_READY ").size());

  ClientOptions c;
  c.endpoints = {endpoint};
  // std::string(...), not = "j": GCC 12 raises a -Wrestrict false positive here (PR 105329).
  c.job_id = std::string("j");
  c.token = std::string("tk");
  c.tensors = {{"w", 100}};
  c.chunk_size = 32;
  c.rpc_timeout = absl::Seconds(10);
  {
    auto client = PsClient::Connect(c);
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE((*client)->Init(std::vector<float>(100, 2.0f)).ok());
    std::vector<float> w(100);
    ASSERT_TRUE((*client)->Pull(0, w).ok());
    EXPECT_EQ(w[99], 2.0f);
  }
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  const int status = WaitExit(pid, absl::Seconds(20));
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << "server did not exit on SIGTERM";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(ReadLine(out[0], absl::Seconds(1)), "") << "more than one line on stdout";
  close(out[0]);
}

TEST(RunServerTest, BadOptionsExitWithOne) {
  ServerOptions o;
  o.shard_index = 3;
  o.num_shards = 2;
  EXPECT_EQ(RunServer(o), 1);
  o.shard_index = 0;
  o.protocol = "softsync:zero";
  EXPECT_EQ(RunServer(o), 1);
  o.protocol = "async";
  o.weights = "fixed8";
  EXPECT_EQ(RunServer(o), 1);
  o.weights = "fixed16";
  o.weights_fl = 31;
  EXPECT_EQ(RunServer(o), 1);
  o.weights_fl = 12;
  o.weights_rounding = "up";
  EXPECT_EQ(RunServer(o), 1);
}

}  // namespace
}  // namespace orrery::server
