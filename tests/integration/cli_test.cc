// The orrery executable's contract: help for every subcommand, exit code 2 and one line on stderr
// for bad usage, exit code 1 and one line for a failed command.
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/cpu_affinity.h"
#include "base/cpu_quota.h"
#include "base/file_lock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "scheduler/job_report.h"
#include "tests/util/metrics_scrape.h"
#include "tests/util/process_io.h"

namespace {

using Result = ::orrery::testing::CommandResult;

// Runs ORRERY_BINARY with `args` (shell-quoted by the caller), capturing both streams.
Result Orrery(const std::string& args) {
  return ::orrery::testing::RunCommand(absl::StrCat(ORRERY_BINARY, " ", args),
                             std::filesystem::temp_directory_path() /
                                 absl::StrCat("orrery-cli-", getpid(), ".err"));
}

int Lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

TEST(CliTest, HelpListsEverySubcommand) {
  Result r = Orrery("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"train", "server", "learner", "run"}) {
    EXPECT_TRUE(absl::StrContains(r.out, sub)) << sub << "\n" << r.out;
  }
}

TEST(CliTest, TrainHelpDescribesEveryFlag) {
  Result r = Orrery("train --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--model", "--data", "--epochs", "--batch", "--lr", "--momentum", "--threads",
                           "--seed", "--limit-train", "--metrics-out", "--precision", "--fl",
                           "--activation-fl", "--rounding", "--update-rounding"}) {
    EXPECT_TRUE(absl::StrContains(r.out, flag)) << flag;
  }
}

TEST(CliTest, UnknownFlagIsUsageErrorWithOneLine) {
  Result r = Orrery("train --model x.yaml --bogus 3");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--bogus")) << r.err;
}

TEST(CliTest, NonNumericValueIsUsageError) {
  Result r = Orrery("train --model x.yaml --epochs many");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
}

TEST(CliTest, BadPrecisionFlagsAreUsageErrorsNamingTheFlag) {
  const std::string model = absl::StrCat(ORRERY_SOURCE_DIR, "/examples/models/mlp.yaml");
  for (const auto& [args, flag] : std::vector<std::pair<std::string, std::string>>{
           {"--precision fixed8", "--precision"},
           {"--precision fixed16 --rounding up", "--rounding"},
           {"--fl 12", "--fl"},  // fixed-point flags need --precision fixed16
           {"--rounding nearest", "--rounding"},
           {"--update-rounding nearest", "--update-rounding"},
           {"--precision fixed16 --update-rounding down", "--update-rounding"}}) {
    Result r = Orrery(absl::StrCat("train --model ", model, " ", args));
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, flag)) << r.err;
  }
  Result r = Orrery(absl::StrCat("train --model ", model, " --precision fixed16 --fl 31"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--fl")) << r.err;
}

TEST(CliTest, BadLearnerPrecisionFlagsNameTheFlag) {
  const std::string learner =
      absl::StrCat("learner --servers 127.0.0.1:1 --model ", ORRERY_SOURCE_DIR,
                   "/examples/models/mlp.yaml ");
  for (const auto& [args, flag] : std::vector<std::pair<std::string, std::string>>{
           {"--precision fixed8", "--precision"},
           {"--fl 12", "--fl"},  // fixed-point flags need --precision fixed16
           {"--precision fixed16 --rounding up", "--rounding"},
           {"--wire fp16", "--wire"},
           {"--wire-fl 12", "--wire-fl"},  // needs --wire fixed16
           {"--wire fixed16 --wire-fl 31", "--wire-fl"}}) {
    Result r = Orrery(learner + args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, flag)) << r.err;
  }
  Result r = Orrery(learner + "--precision fixed16 --fl 31");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--fl")) << r.err;
}

TEST(CliTest, BadServerWeightsFlagsNameTheFlag) {
  for (const auto& [args, flag] : std::vector<std::pair<std::string, std::string>>{
           {"--weights fixed8", "--weights"},
           {"--weights fixed16 --weights-fl 31", "--weights-fl"},
           {"--weights fixed16 --weights-rounding up", "--weights-rounding"}}) {
    Result r = Orrery("server --listen 127.0.0.1:0 " + args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_TRUE(absl::StrContains(r.err, flag)) << r.err;
  }
}

TEST(CliTest, MissingSubcommandIsUsageError) {
  Result r = Orrery("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
}

TEST(CliTest, MistypedSubcommandIsUsageErrorNamingItAndTheKnownOnes) {
  Result r = Orrery("sumbit job.yaml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "unknown subcommand 'sumbit'")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "submit")) << r.err;
  EXPECT_FALSE(absl::StrContains(r.err, "log-relay")) << r.err;  // hidden
}

TEST(CliTest, CpusFlagRefusesABadListAsUsageAndAnUnavailableCpuAsFailure) {
  for (const char* role : {"server", "learner --servers 127.0.0.1:1 --model m.yaml"}) {
    Result r = Orrery(absl::StrCat(role, " --cpus 5-2"));
    EXPECT_EQ(r.exit_code, 2) << role;
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, "--cpus: cpu list '5-2': '5-2' is a range that runs backwards")) << r.err;
  }
  // Cpu 1023 parses but is on no machine this runs on: refused before anything starts.
  Result r = Orrery("server --listen 127.0.0.1:0 --cpus 1023");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "orrery server: --cpus: cpu 1023 is not available to this process (it may use ")) << r.err;
  EXPECT_FALSE(absl::StrContains(r.out, "ORRERY_SERVER_READY")) << r.out;
}

// Every thread of a shard started with --cpus runs on that core only (gRPC's own included).
TEST(CliTest, ServerWithCpusRunsEveryThreadOnThoseCores) {
  const std::vector<int> allowed = orrery::AllowedCpus().value();
  // On one core every thread is on it bound or not: nothing to tell apart.
  if (allowed.size() < 2) GTEST_SKIP() << "needs two cores to tell a bound server from an unbound one";
  const std::string cpu = absl::StrCat(allowed.back());
  const ::orrery::testing::PipedChild server =
      ::orrery::testing::SpawnPiped({ORRERY_BINARY, "server", "--listen", "127.0.0.1:0", "--cpus", cpu});
  ASSERT_GT(server.pid, 0);
  const pid_t pid = server.pid;
  const std::string ready = ::orrery::testing::ReadLine(server.fd, absl::Seconds(30));
  EXPECT_TRUE(absl::StartsWith(ready, "ORRERY_SERVER_READY ")) << ready;
  int threads = 0;
  for (const auto& task : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"))) {
    const std::string list = ::orrery::testing::CpusAllowedList(task.path() / "status");
    if (list.empty()) continue;  // the thread ended meanwhile
    ++threads;
    EXPECT_EQ(list, cpu) << task.path();
  }
  EXPECT_GT(threads, 1);  // gRPC's threads were there to check
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  close(server.fd);
}

// A cgroup of its own under this process's, granting one CPU's worth of time per period (v1's cpu
// controller, or v2's where it is enabled for children): what a Kubernetes CPU limit of 1 or
// `systemd-run -p CPUQuota=100%` sets. Empty reason() when made; removed when destroyed (the
// processes run in it must have exited).
class OneCpuQuotaCgroup {
 public:
  OneCpuQuotaCgroup() {
    const std::string mountinfo = orrery::cgroup_internal::ReadSmallFile("/proc/self/mountinfo").value_or("");
    const std::string cgroups = orrery::cgroup_internal::ReadSmallFile("/proc/self/cgroup").value_or("");
    reason_ = "no cgroup cpu controller is mounted";
    for (const orrery::CgroupMount& m : orrery::CpuCgroupMounts(mountinfo)) {
      const std::optional<std::string> path = orrery::CgroupPathOf(cgroups, m.v2);
      if (!path) continue;
      const std::filesystem::path parent = orrery::CgroupDirectory(m, *path);
      if (m.v2) {
        std::ifstream controls(parent / "cgroup.subtree_control");
        std::string enabled;
        std::getline(controls, enabled);
        if (!orrery::cgroup_internal::HasItem(absl::StrReplaceAll(enabled, {{" ", ","}}), "cpu")) {
          reason_ = absl::StrCat("the cpu controller is not enabled for children of ", parent.string());
          continue;
        }
      }
      const std::filesystem::path dir = parent / absl::StrCat("orrery-test-", getpid());
      std::error_code ec;
      if (!std::filesystem::create_directory(dir, ec)) {
        reason_ = absl::StrCat("cannot make a cgroup under ", parent.string(), ": ", ec.message());
        continue;
      }
      dir_ = dir;
      const bool set = m.v2 ? Write(dir / "cpu.max", "100000 100000")
                            : Write(dir / "cpu.cfs_period_us", "100000") && Write(dir / "cpu.cfs_quota_us", "100000");
      if (set) {
        reason_.clear();
        return;
      }
      reason_ = absl::StrCat("cannot set the quota of ", dir.string());
      std::filesystem::remove(dir, ec);
      dir_.clear();
    }
  }
  ~OneCpuQuotaCgroup() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove(dir_, ec);
  }
  const std::string& reason() const { return reason_; }
  // A shell command that moves itself into the cgroup, then runs `command`.
  std::string Inside(const std::string& command) const {
    return absl::StrCat("echo $$ > ", (dir_ / "cgroup.procs").string(), " && exec ", command);
  }

 private:
  static bool Write(const std::filesystem::path& file, const std::string& text) {
    std::ofstream out(file);
    out << text << "\n";
    out.flush();
    return static_cast<bool>(out);
  }
  std::filesystem::path dir_;
  std::string reason_;
};

// The body of the last `tag` line among `lines` (scheduler::ParseTagged); null when there is none.
nlohmann::json LastTagged(const std::vector<std::string>& lines, const std::string& tag) {
  nlohmann::json found;
  for (const std::string& line : lines) {
    std::string line_tag;
    nlohmann::json body;
    if (orrery::scheduler::ParseTagged(line, &line_tag, &body) && line_tag == tag) found = std::move(body);
  }
  return found;
}

// A CPU quota is a limit the affinity mask does not show: `orrery run` sizes its learners' compute
// threads from the cores it can keep busy, so one learner gets one thread under a one-CPU quota
// and one per core without it (read from the learner's ORRERY_LEARNER_JOINED event).
TEST(CliTest, RunGivesLearnersNoMoreComputeThreadsThanTheCpuQuotaGrants) {
  if (orrery::UsableCpuCount() < 2) GTEST_SKIP() << "needs two usable cores to tell a quota from none";
  OneCpuQuotaCgroup cgroup;
  if (!cgroup.reason().empty()) GTEST_SKIP() << cgroup.reason();
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-quota-", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "job.yaml") << "name: quota\nmodel: " << ORRERY_SOURCE_DIR << "/examples/models/mlp.yaml\n"
                                  << "servers: 1\nlearners: 1\nprotocol: async\nepochs: 1\nlimit_train: 1000\nlimit_test: 200\n";
  const auto threads_of_learner = [](const std::string& logs) {
    std::ifstream events(std::filesystem::path(logs) / "learner-0.events");
    std::vector<std::string> lines;
    for (std::string line; std::getline(events, line);) lines.push_back(line);
    const nlohmann::json joined = LastTagged(lines, "ORRERY_LEARNER_JOINED");
    return joined.is_object() ? joined.value("threads", -1) : -1;
  };
  const std::string run = absl::StrCat(ORRERY_BINARY, " run --quiet ", (dir / "job.yaml").string(), " --log-dir ");
  const std::string err = (dir / "err").string();
  const Result limited = ::orrery::testing::RunCommand(
      absl::StrCat("sh -c '", cgroup.Inside(run + (dir / "limited").string()), "'"), err);
  ASSERT_EQ(limited.exit_code, 0) << limited.err;
  EXPECT_EQ(threads_of_learner((dir / "limited").string()), 1);
  const Result free = ::orrery::testing::RunCommand(run + (dir / "free").string(), err);
  ASSERT_EQ(free.exit_code, 0) << free.err;
  EXPECT_EQ(threads_of_learner((dir / "free").string()), orrery::UsableCpuCount());
  std::filesystem::remove_all(dir);
}

// A child's stdout read to its end (or to `limit`, when the child is killed), split into lines,
// and how it exited (-1: by a signal).
struct Finished {
  std::vector<std::string> lines;
  int exit_code = -1;
};
Finished ReadToEnd(const ::orrery::testing::PipedChild& child, absl::Duration limit) {
  Finished f;
  std::string text;
  const absl::Time end = absl::Now() + limit;
  for (bool open = true; open && absl::Now() < end;) {
    pollfd p{child.fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(child.fd, buf, sizeof(buf));
    if (n > 0) text.append(buf, static_cast<size_t>(n));
    open = n > 0 || (n < 0 && errno == EINTR);
  }
  if (absl::Now() >= end) kill(child.pid, SIGKILL);
  close(child.fd);
  int status = 0;
  waitpid(child.pid, &status, 0);
  f.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  f.lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  return f;
}


// "A new learner can join a running job", with real processes: a hardsync shard started for
// λ = 2, its two learners training, and a third learner started by hand once they are past step
// 20. It joins at the step being collected (not at 0: it would hold the others back), the shard
// waits for its gradients from then on, it trains to the end of its budget, and every learner
// finishes.
TEST(CliTest, ALearnerStartedLaterJoinsARunningHardsyncJobAtItsStepAndTrains) {
  const std::string model = absl::StrCat(ORRERY_SOURCE_DIR, "/examples/models/mlp.yaml");
  ::orrery::testing::PipedChild server = ::orrery::testing::SpawnPiped(
      {ORRERY_BINARY, "server", "--listen", "127.0.0.1:0", "--protocol", "hardsync", "--learners", "2", "--job", "late",
       "--metrics-listen", "127.0.0.1:0"});
  ASSERT_GT(server.pid, 0);
  const std::string metrics = ::orrery::testing::ReadLine(server.fd, absl::Seconds(30));
  ASSERT_TRUE(absl::StartsWith(metrics, "ORRERY_SERVER_METRICS ")) << metrics;
  const std::string ready = ::orrery::testing::ReadLine(server.fd, absl::Seconds(30));
  ASSERT_TRUE(absl::StartsWith(ready, "ORRERY_SERVER_READY ")) << ready;
  const std::string endpoint = ready.substr(ready.find(' ') + 1);
  const auto learner = [&](int index, int learners) {
    return ::orrery::testing::SpawnPiped({ORRERY_BINARY, "learner", "--servers", endpoint, "--job", "late", "--model",
                                          model, "--index", absl::StrCat(index), "--learners", absl::StrCat(learners),
                                          "--limit-train", "6000", "--batch", "16", "--epochs", "8",
                                          "--report-every", "0.05", "--threads", "1"});
  };
  const ::orrery::testing::PipedChild first = learner(0, 2), second = learner(1, 2);
  ASSERT_GT(first.pid, 0);
  ASSERT_GT(second.pid, 0);
  // Until learner 0 reports step 20 or more (each learner's budget: 8 * (3000 / 16) = 1496 steps,
  // seconds of training: the late learner has time to start while the job runs).
  int64_t first_step = 0;
  for (const absl::Time end = absl::Now() + absl::Seconds(60); first_step < 20 && absl::Now() < end;) {
    const nlohmann::json progress =
        LastTagged({::orrery::testing::ReadLine(first.fd, end - absl::Now())}, "ORRERY_LEARNER");
    if (progress.is_object()) first_step = progress.value("step", int64_t{0});
  }
  ASSERT_GE(first_step, 20) << "learner 0 did not get going";
  const Finished late = ReadToEnd(learner(2, 3), absl::Seconds(120));
  const Finished a = ReadToEnd(first, absl::Seconds(120)), b = ReadToEnd(second, absl::Seconds(120));
  const std::string scraped = ::orrery::testing::ScrapeMetrics(metrics.substr(metrics.find(' ') + 1));
  kill(server.pid, SIGTERM);
  close(server.fd);
  waitpid(server.pid, nullptr, 0);
  EXPECT_EQ(late.exit_code, 0);
  EXPECT_EQ(a.exit_code, 0);
  EXPECT_EQ(b.exit_code, 0);
  const nlohmann::json joined = LastTagged(late.lines, "ORRERY_LEARNER_JOINED");
  ASSERT_TRUE(joined.is_object()) << absl::StrJoin(late.lines, "\n");
  EXPECT_EQ(joined.value("learner", -1), 2);
  // Joined at hardsync's current step: past learner 0's step 20 at the time, and short of the end.
  EXPECT_GE(joined.value("start_clock", int64_t{-1}), 20);
  EXPECT_LT(joined.value("start_clock", int64_t{-1}), 1496);
  const nlohmann::json done = LastTagged(late.lines, "ORRERY_LEARNER_DONE");
  ASSERT_TRUE(done.is_object()) << absl::StrJoin(late.lines, "\n");
  EXPECT_GT(done.value("pushes", int64_t{0}), 0) << done.dump();
  EXPECT_EQ(done.value("dropped", -1), 0) << done.dump();
  for (const Finished* f : {&a, &b}) {
    const nlohmann::json d = LastTagged(f->lines, "ORRERY_LEARNER_DONE");
    ASSERT_TRUE(d.is_object());
    EXPECT_EQ(d.value("steps", int64_t{0}), 1496) << d.dump();
  }
  // One update per step, each averaging every active learner's gradient: the late learner's
  // gradients went into the 1496 steps (none applied on its own, none refused).
  EXPECT_EQ(::orrery::testing::MetricValue(scraped, "orrery_shard_version"), 1496.0) << scraped;
  EXPECT_EQ(::orrery::testing::MetricValue(scraped, "orrery_shard_gradients_applied_total"),
            2 * 1496.0 + done.value("pushes", 0.0))
      << scraped;
}

TEST(CliTest, MissingModelFileFailsWithOneLineNamingIt) {
  Result r = Orrery("train --model /nonexistent/model.yaml");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "/nonexistent/model.yaml")) << r.err;
}

TEST(CliTest, BadJobSpecFailsWithOneLineNamingTheKey) {
  const std::string path = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-bad-", getpid(), ".yaml");
  {
    std::ofstream f(path);
    f << "name: bad\nmodel: " << ORRERY_SOURCE_DIR << "/examples/models/mlp.yaml\n"
      << "protocol: softsync:0\n";
  }
  Result r = Orrery("run " + path);
  std::filesystem::remove(path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "protocol")) << r.err;
}

TEST(CliTest, RunRefusesAJobBeyondTheOpenFileLimitBeforeStartingAnything) {
  const std::string path = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-big-", getpid(), ".yaml");
  {
    std::ofstream f(path);
    f << "name: big\nmodel: " << ORRERY_SOURCE_DIR << "/examples/models/mlp.yaml\n"
      << "servers: 100\nlearners: 200\n";
  }
  // 301 processes need about 1,268 open files; under a limit of 512 the run is refused at once.
  Result r = ::orrery::testing::RunCommand(
      absl::StrCat("ulimit -n 512 && ", ORRERY_BINARY, " run ", path),
      std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-", getpid(), ".err"));
  std::filesystem::remove(path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "301 processes")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "ulimit -n")) << r.err;
  EXPECT_FALSE(absl::StrContains(r.err, "server-0")) << "nothing was started: " << r.err;
}

TEST(CliTest, RunRefusesAJobBeyondTheMachinesMemoryBeforeStartingAnything) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-mem-", getpid());
  std::filesystem::create_directories(dir);
  {
    // 800M parameters (3 GiB of weights) in 100 learners: about a terabyte.
    std::ofstream(dir / "model.yaml") << "name: wide\nlayers:\n  - {type: flatten}\n"
                                      << "  - {type: dense, units: 1000000}\n  - {type: dense, units: 10}\n";
    std::ofstream(dir / "job.yaml") << "name: wide\nmodel: model.yaml\nlearners: 100\n";
  }
  Result r = Orrery(absl::StrCat("run ", (dir / "job.yaml").string(), " --log-dir ", (dir / "logs").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "its 795000010 parameters (3.0 GiB of fp32 weights) and 1001578 activations per sample, in 100 learner(s)")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "GiB this machine has available")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "logs/server-0.log")) << "nothing was started";
  std::filesystem::remove_all(dir);
}

// A truncated training set: every learner fails saying so, and the failure the run names is the
// one whose last lines it shows.
TEST(CliTest, ACorruptTrainingSetFailsTheRunNamingTheFileAndTheLearner) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-corrupt-", getpid());
  const std::filesystem::path data = dir / "data", fashion = "/usr/share/datasets/fashion-mnist";
  std::filesystem::create_directories(data);
  for (const char* f : {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"}) {
    std::filesystem::create_symlink(fashion / f, data / f);
  }
  {
    std::ifstream in(fashion / "train-images-idx3-ubyte.gz", std::ios::binary);
    std::string head(1000000, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(data / "train-images-idx3-ubyte.gz", std::ios::binary) << head;
    std::ofstream(dir / "job.yaml") << "name: corrupt\nmodel: " << ORRERY_SOURCE_DIR << "/examples/models/mlp.yaml\n"
                                    << "data: " << data.string() << "\nlearners: 2\nlimit_test: 200\n";
  }
  Result r = Orrery(absl::StrCat("run --quiet ", (dir / "job.yaml").string(), " --log-dir ", (dir / "logs").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "train-images-idx3-ubyte.gz: truncated gzip stream")) << r.err;
  const size_t at = r.err.find("every learner failed; learner-");
  ASSERT_NE(at, std::string::npos) << r.err;
  const char index = r.err[at + 30];
  EXPECT_TRUE(absl::StrContains(r.err, absl::StrCat("--index ", std::string(1, index), " "))) << r.err;
  std::filesystem::remove_all(dir);
}

// A shard whose checkpoints cannot be written trains on, and the run says so at the end and in
// its metrics instead of letting the user believe the job was protected.
TEST(CliTest, FailedCheckpointWritesAreReportedByTheRun) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-ckpt-", getpid());
  // A non-empty directory where the checkpoint file should go: the rename onto it fails, root or not.
  std::filesystem::create_directories(dir / "ckpt/shard-0.ckpt/occupied");
  std::ofstream(dir / "job.yaml") << "name: unprotected\nmodel: " << ORRERY_SOURCE_DIR << "/examples/models/mlp.yaml\n"
                                  << "learners: 2\nprotocol: async\nlimit_train: 4000\nlimit_test: 200\n"
                                  << "checkpoint: {dir: " << (dir / "ckpt").string() << ", every_seconds: 0.2}\n";
  Result r = Orrery(absl::StrCat("run --quiet ", (dir / "job.yaml").string(), " --log-dir ", (dir / "logs").string(),
                                 " --metrics-out ", (dir / "metrics.json").string()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "orrery run: warning: ")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "checkpoint write(s) failed, the last: server-0: cannot rename")) << r.err;
  std::ifstream in(dir / "metrics.json");
  const nlohmann::json metrics = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(metrics.is_discarded());
  EXPECT_GE(metrics.value("checkpoint_failures", 0), 1);
  EXPECT_TRUE(absl::StrContains(metrics.value("checkpoint_error", ""), "shard-0.ckpt")) << metrics.dump();
  std::filesystem::remove_all(dir);
}

TEST(CliTest, AnUnwritableMetricsPathIsRefusedBeforeTheWorkStarts) {
  const std::string path = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-ok-", getpid(), ".yaml");
  {
    std::ofstream f(path);
    f << "name: ok\nmodel: " << ORRERY_SOURCE_DIR << "/examples/models/mlp.yaml\n";
  }
  for (const std::string& command :
       {absl::StrCat("run ", path), absl::StrCat("train --model ", ORRERY_SOURCE_DIR, "/examples/models/mlp.yaml")}) {
    Result r = Orrery(command + " --metrics-out /nonexistent-dir/metrics.json");
    EXPECT_EQ(r.exit_code, 2) << command;
    EXPECT_EQ(Lines(r.err), 1) << command << ": " << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, "--metrics-out: cannot write /nonexistent-dir/metrics.json")) << r.err;
    EXPECT_TRUE(r.out.empty()) << "it started: " << r.out;
  }
  std::filesystem::remove(path);
}

TEST(CliTest, RunRefusesALogDirInUseBeforeStartingAnything) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-busy-", getpid());
  std::filesystem::create_directories(dir / "logs");
  {
    std::ofstream f(dir / "job.yaml");
    f << "name: busy\nmodel: " << ORRERY_SOURCE_DIR << "/examples/models/mlp.yaml\n";
  }
  // This test holds the lock as a running `orrery run` would.
  absl::StatusOr<orrery::FileLock> held = orrery::FileLock::Acquire((dir / "logs/.lock").string(), "", "", "");
  ASSERT_TRUE(held.ok()) << held.status();
  Result r = Orrery(absl::StrCat("run ", (dir / "job.yaml").string(), " --log-dir ", (dir / "logs").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, absl::StrCat("is in use by another run (pid ", getpid(), ")"))) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--log-dir")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "logs/server-0.log")) << "nothing was started";
  std::filesystem::remove_all(dir);
}

TEST(CliTest, ASecondSchedulerOnTheSameStoreOrLogRootIsRefused) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-sched-", getpid());
  std::filesystem::create_directories(dir / "logs");
  const std::string env = "ORRERY_SCHEDULER_TOKEN=0123456789abcdef0123456789abcdef ";
  {
    absl::StatusOr<orrery::FileLock> held = orrery::FileLock::Acquire((dir / "jobs.db.lock").string(), "", "", "");
    ASSERT_TRUE(held.ok()) << held.status();
    Result r = ::orrery::testing::RunCommand(
        absl::StrCat(env, ORRERY_BINARY, " scheduler --listen 127.0.0.1:0 --store ", (dir / "jobs.db").string()),
        dir / "err");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, absl::StrCat("jobs.db is in use by another scheduler (pid ", getpid(), ")")))
        << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "jobs.db")) << "the store was not opened";
  }
  {
    absl::StatusOr<orrery::FileLock> held = orrery::FileLock::Acquire((dir / "logs/.lock").string(), "", "", "");
    ASSERT_TRUE(held.ok()) << held.status();
    Result r = ::orrery::testing::RunCommand(
        absl::StrCat(env, ORRERY_BINARY, " scheduler --listen 127.0.0.1:0 --store ", (dir / "other.db").string(),
                     " --log-root ", (dir / "logs").string()),
        dir / "err");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, "--log-root")) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, "in use by another scheduler")) << r.err;
  }
  std::filesystem::remove_all(dir);
}

// The pids a run's processes had: its log files' "sys| started pid N:" lines.
std::vector<pid_t> StartedPids(const std::filesystem::path& log_dir) {
  std::vector<pid_t> pids;
  for (const auto& entry : std::filesystem::directory_iterator(log_dir)) {
    if (entry.path().extension() != ".log") continue;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) {
      const size_t at = line.find("sys| started pid ");
      int pid = 0;
      if (at != std::string::npos &&
          absl::SimpleAtoi(line.substr(at + 17, line.find(':', at + 17) - at - 17), &pid)) {
        pids.push_back(pid);
      }
    }
  }
  return pids;
}

// `orrery run JOB --log-dir LOGS [extra]`, sent SIGINT once a line of its stderr passes `when`.
struct InterruptedRun {
  bool interrupted = false;  // the line came and the signal was sent
  int exit_code = -1;        // -1: ended by a signal
  std::string err;           // its stderr from the line on
};
InterruptedRun RunAndInterrupt(const std::string& job, const std::string& logs,
                               const std::function<bool(const std::string&)>& when) {
  InterruptedRun r;
  const ::orrery::testing::PipedChild run = ::orrery::testing::SpawnPiped(
      {ORRERY_BINARY, "run", job, "--log-dir", logs}, STDERR_FILENO);
  if (run.pid < 0) return r;
  const pid_t pid = run.pid;
  for (int i = 0; i < 1000; ++i) {
    std::string line = ::orrery::testing::ReadLine(run.fd, absl::Seconds(60));
    if (line.empty()) break;  // EOF, or a minute of silence
    if (when(line)) {
      r.err = line + "\n";
      r.interrupted = kill(pid, SIGINT) == 0;
      break;
    }
  }
  for (int i = 0; i < 1000; ++i) {
    std::string next = ::orrery::testing::ReadLine(run.fd, absl::Seconds(30));
    if (next.empty()) break;  // EOF (or half a minute of silence: the exit status says which)
    r.err += next + "\n";
  }
  int status = 0;
  waitpid(pid, &status, 0);
  close(run.fd);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(CliTest, CtrlCStopsEveryProcessOfARunAndExitsWith130) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-int-", getpid());
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "job.yaml");  // minutes of training unless interrupted
    f << "name: interrupted\nmodel: " << ORRERY_SOURCE_DIR << "/examples/models/mlp.yaml\n"
      << "servers: 2\nlearners: 2\nprotocol: async\nepochs: 500\nlimit_train: 4000\nlimit_test: 500\n";
  }
  const std::string logs = (dir / "logs").string();
  // After the first evaluation: shards, learners and evaluator are all up.
  InterruptedRun r = RunAndInterrupt((dir / "job.yaml").string(), logs,
                                     [](const std::string& line) { return absl::StrContains(line, "test accuracy"); });
  ASSERT_TRUE(r.interrupted) << r.err;
  EXPECT_EQ(r.exit_code, 130) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "orrery run: interrupted by Interrupt")) << r.err;
  const std::vector<pid_t> pids = StartedPids(logs);
  EXPECT_EQ(pids.size(), 5u) << "2 shards, 2 learners, the evaluator";
  for (pid_t p : pids) EXPECT_NE(kill(p, 0), 0) << "pid " << p << " outlived its run";
  std::filesystem::remove_all(dir);
}

// Ctrl-C, then `orrery run --resume`: the job ends where an uninterrupted run would (hardsync
// applies exactly one update per step of the learners), not from scratch, and its images/s
// counts only what the resumed run trained.
TEST(CliTest, ARunStoppedByCtrlCResumesFromItsCheckpointsToTheSameEnd) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-resume-", getpid());
  std::filesystem::create_directories(dir);
  // 2 learners x 10,000 images / 64 = 156 steps per epoch, 624 in all.
  std::ofstream(dir / "job.yaml") << "name: resumed\nmodel: " << ORRERY_SOURCE_DIR << "/examples/models/mlp.yaml\n"
                                  << "servers: 2\nlearners: 2\nprotocol: hardsync\nepochs: 4\nlimit_train: 20000\n"
                                  << "limit_test: 500\neval_every_seconds: 0.2\n"
                                  << "checkpoint: {dir: " << (dir / "ckpt").string() << ", every_seconds: 0.2}\n";
  const std::string job = (dir / "job.yaml").string(), logs = (dir / "logs").string();
  // An evaluation after some updates ("... updates 31  staleness ..."; the progress lines, which
  // also show the accuracy, have no "updates").
  InterruptedRun first = RunAndInterrupt(job, logs, [](const std::string& line) {
    const size_t at = line.find("  updates ");
    return at != std::string::npos && line[at + 10] >= '1' && line[at + 10] <= '9';
  });
  ASSERT_TRUE(first.interrupted) << first.err;
  ASSERT_EQ(first.exit_code, 130) << first.err;
  Result second = Orrery(absl::StrCat("run --quiet --resume ", job, " --log-dir ", logs, " --metrics-out ",
                                      (dir / "metrics.json").string()));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  std::ifstream in(dir / "metrics.json");
  const nlohmann::json m = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(m.is_discarded());
  EXPECT_EQ(m.value("updates_applied", 0), 624);
  EXPECT_EQ(m.value("samples_applied", 0), 624 * 128);
  const double at_resume = m.value("samples_at_resume", 0.0);
  EXPECT_GT(at_resume, 0) << m.dump();
  EXPECT_LT(at_resume, 624 * 128) << "the first run was stopped before the end";
  EXPECT_NEAR(m.value("images_per_second", 0.0) * m.value("train_seconds", 0.0), 624 * 128 - at_resume, 1.0);
  EXPECT_GT(m.value("test_accuracy", 0.0), 0.7);
  std::filesystem::remove_all(dir);
}

// A process the scheduler daemon started (ORRERY_LOG_FILE and ORRERY_LOG_ROLE set) whose output
// pipe loses its reader, as when the daemon is killed: what it prints afterwards (here the line
// saying why it failed) reaches its log file through `orrery log-relay`, formatted as the daemon
// writes it, and it is not killed by SIGPIPE. The relay ends once the process has.
TEST(CliTest, OutputAfterItsReaderDiedReachesTheLogFileThroughTheRelay) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-relay-", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string log = (dir / "learner-0.log").string();
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(out[1], STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    setenv("ORRERY_LOG_FILE", log.c_str(), 1);
    setenv("ORRERY_LOG_ROLE", "job-7/learner-0", 1);
    // No shard listens on port 1: the learner fails after its (short) retry budget.
    execl(ORRERY_BINARY, ORRERY_BINARY, "learner", "--servers", "127.0.0.1:1", "--model",
          ORRERY_SOURCE_DIR "/examples/models/mlp.yaml", "--retry-budget", "2", "--rpc-timeout", "1",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(pid, 0);
  close(out[1]);
  close(out[0]);  // the reader dies
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  auto read_log = [&log] {
    std::ifstream in(log);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  // The relay names its pid on the line it writes first, as it starts.
  std::string text = read_log();
  for (const absl::Time end = absl::Now() + absl::Seconds(30);
       text.find("log-relay pid ") == std::string::npos && absl::Now() < end; text = read_log()) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const size_t at = text.find("log-relay pid ");
  ASSERT_NE(at, std::string::npos) << text;
  const pid_t relay = std::atoi(text.c_str() + at + 14);
  ASSERT_GT(relay, 0);
  // It exits once the learner's ends of the pipes close, after writing the last line: wait for
  // that through a pidfd (it is not this test's child; a zombie counts as exited), then read the
  // log whole.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, relay, 0));
  bool gone = pidfd < 0 && errno == ESRCH;  // already reaped
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    gone = poll(&p, 1, 30000) == 1;
    close(pidfd);
  }
  EXPECT_TRUE(gone) << "the relay outlived its process";
  text = read_log();
  EXPECT_TRUE(absl::StrContains(text, " job-7/learner-0 err| orrery learner: Register on shard 0 (127.0.0.1:1)")) << text;
  EXPECT_TRUE(absl::StrContains(text, " job-7/learner-0 sys| its output reader (the scheduler) went away")) << text;
  // And its exit code, for a restarted daemon whose child it is not.
  std::ifstream exit_record(log + ".exit");
  const std::string recorded((std::istreambuf_iterator<char>(exit_record)), std::istreambuf_iterator<char>());
  EXPECT_EQ(recorded, absl::StrCat("{\"pid\":", pid, ",\"code\":1}\n"));
  std::filesystem::remove_all(dir);
}

TEST(CliTest, LearnerWithBadIndexFailsNamingTheFlag) {
  Result r = Orrery(absl::StrCat("learner --servers 127.0.0.1:1 --model ", ORRERY_SOURCE_DIR,
                              "/examples/models/mlp.yaml --index 3 --learners 2"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--index")) << r.err;
}

TEST(CliTest, ServerWithBadProtocolFailsWithOneLine) {
  Result r = Orrery("server --listen 127.0.0.1:0 --protocol sometimes");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "sometimes")) << r.err;
}

TEST(CliTest, TrainRunsAndWritesMetrics) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist")) GTEST_SKIP() << "no dataset";
  const std::string metrics = std::filesystem::temp_directory_path() / absl::StrCat("orrery-cli-m-", getpid(), ".json");
  Result r = Orrery(absl::StrCat("train --model ", ORRERY_SOURCE_DIR,
                              "/examples/models/mlp.yaml --limit-train 2000 --limit-test 500 --threads 1 --quiet --metrics-out ", metrics));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "test_accuracy")) << r.out;
  EXPECT_TRUE(std::filesystem::exists(metrics));
  std::filesystem::remove(metrics);
}

}  // namespace
