// Runs real child processes (/bin/sh, /bin/sleep, /bin/false) under LocalBackend. Every wait is
// the event loop run until the awaited event, bounded by a deadline; nothing sleeps to synchronise.
#include "scheduler/backends/local_backend.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/line_waiter.h"

namespace orrery::scheduler {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Contains;

constexpr absl::Duration kDeadline = absl::Seconds(20);

ProcessSpec Command(const std::string& role, std::vector<std::string> argv) {
  ProcessSpec spec;
  spec.role = role;
  spec.argv = std::move(argv);
  return spec;
}

ProcessSpec Shell(const std::string& role, const std::string& script) {
  return Command(role, {"/bin/sh", "-c", script});
}

class LocalBackendTest : public ::testing::Test {
 protected:
  LocalBackendTest() : backend_(loop_) {
    backend_.AddLineListener([this](const OutputLine& line) { lines_.push_back(line); });
    backend_.AddExitListener([this](const ProcessExit& exit) { exits_.push_back(exit); });
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("local_backend_test_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  ~LocalBackendTest() override { fs::remove_all(dir_); }

  ProcessId StartOrDie(const ProcessSpec& spec) {
    absl::StatusOr<ProcessId> id = backend_.Start(spec);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or(-1);
  }

  // Runs the loop until `id` has produced `count` exit events (or the deadline passes).
  bool RunUntilExits(ProcessId id, size_t count) {
    return loop_.RunUntil([&] { return ExitsOf(id).size() >= count; }, kDeadline);
  }

  std::vector<ProcessExit> ExitsOf(ProcessId id) const {
    std::vector<ProcessExit> out;
    for (const ProcessExit& e : exits_) {
      if (e.id == id) out.push_back(e);
    }
    return out;
  }

  std::vector<std::string> TextsOf(ProcessId id, Stream stream) const {
    std::vector<std::string> out;
    for (const OutputLine& l : lines_) {
      if (l.id == id && l.stream == stream) out.push_back(l.text);
    }
    return out;
  }

  EventLoop loop_;
  LocalBackend backend_;
  std::vector<OutputLine> lines_;
  std::vector<ProcessExit> exits_;
  fs::path dir_;
};

TEST_F(LocalBackendTest, CapturesLinesInOrderBeforeReportingTheExit) {
  ProcessSpec spec = Shell("learner-0", "i=1; while [ $i -le 2000 ]; do echo line$i; i=$((i+1)); done; "
                                        "echo oops >&2; printf 'no newline'");
  spec.log_path = (dir_ / "logs" / "learner-0.log").string();
  ProcessId id = StartOrDie(spec);
  size_t lines_at_exit = 0;
  backend_.AddExitListener([&](const ProcessExit&) { lines_at_exit = lines_.size(); });
  ASSERT_TRUE(RunUntilExits(id, 1));

  std::vector<std::string> out = TextsOf(id, Stream::kStdout);
  ASSERT_EQ(out.size(), 2001u);
  for (int i = 1; i <= 2000; ++i) ASSERT_EQ(out[i - 1], absl::StrCat("line", i));
  EXPECT_EQ(out.back(), "no newline");
  EXPECT_THAT(TextsOf(id, Stream::kStderr), ElementsAre("oops"));
  EXPECT_EQ(lines_at_exit, 2002u);
  EXPECT_EQ(lines_.front().role, "learner-0");
  EXPECT_TRUE(exits_[0].status.ok());
  EXPECT_TRUE(exits_[0].final());
  EXPECT_TRUE(backend_.AllExited());

  std::ifstream log(spec.log_path);
  std::stringstream text;
  text << log.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr(" learner-0 out| line1\n"));
  EXPECT_THAT(text.str(), HasSubstr(" learner-0 out| line2000\n"));
  EXPECT_THAT(text.str(), HasSubstr(" learner-0 err| oops\n"));
  EXPECT_THAT(text.str(), HasSubstr(" learner-0 sys| started pid "));
  EXPECT_THAT(text.str(), HasSubstr(" learner-0 sys| exited: exit code 0"));
  // stdout and stderr are not ordered against each other; the exit note comes after both.
  EXPECT_THAT(backend_.Tail(id, 3), Contains("out| no newline"));
  EXPECT_THAT(backend_.Tail(id, 1), ElementsAre("sys| exited: exit code 0"));
}

TEST_F(LocalBackendTest, ReportsExitCodesAndSignals) {
  ProcessId ok = StartOrDie(Command("true", {"/bin/true"}));
  ProcessId fails = StartOrDie(Command("false", {"false"}));  // found in PATH
  ProcessId code = StartOrDie(Shell("code", "exit 42"));
  ProcessId killed = StartOrDie(Shell("killed", "kill -9 $$"));
  ASSERT_TRUE(loop_.RunUntil([&] { return exits_.size() == 4; }, kDeadline));

  EXPECT_EQ(ExitsOf(ok)[0].status.exit_code, 0);
  EXPECT_EQ(ExitsOf(fails)[0].status.exit_code, 1);
  EXPECT_EQ(ExitsOf(code)[0].status.exit_code, 42);
  EXPECT_EQ(ExitsOf(killed)[0].status.signal, SIGKILL);
  EXPECT_EQ(ExitsOf(killed)[0].status.ToString(), "killed by signal 9 (SIGKILL)");
  EXPECT_EQ(ExitsOf(code)[0].status.ToString(), "exit code 42");
  for (const ProcessExit& e : exits_) EXPECT_FALSE(e.stop_requested);
  absl::StatusOr<ProcessInfo> info = backend_.Info(code);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, ProcessState::kExited);
  EXPECT_EQ(info->last_exit->exit_code, 42);
}

TEST_F(LocalBackendTest, StartErrorsNameTheRole) {
  absl::StatusOr<ProcessId> missing = backend_.Start(Command("server-0", {"no-such-program-xyz"}));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("server-0: 'no-such-program-xyz' not found"));
  absl::StatusOr<ProcessId> not_exec = backend_.Start(Command("server-1", {"/etc/hostname"}));
  EXPECT_FALSE(not_exec.ok());
  EXPECT_THAT(std::string(not_exec.status().message()), HasSubstr("server-1: cannot start '/etc/hostname'"));
  StartOrDie(Command("server-2", {"/bin/true"}));
  EXPECT_EQ(backend_.Start(Command("server-2", {"/bin/true"})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_.Start(Command("x", {})).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LocalBackendTest, StartGroupIsAllOrNothing) {
  absl::StatusOr<std::vector<ProcessId>> group = backend_.StartGroup(
      {Command("server-0", {"/bin/sleep", "1000"}), Command("server-1", {"/no/such/binary"})});
  ASSERT_FALSE(group.ok());
  EXPECT_THAT(std::string(group.status().message()), HasSubstr("server-1"));
  ProcessId first = backend_.Find("server-0").value();
  ASSERT_TRUE(RunUntilExits(first, 1));
  EXPECT_EQ(ExitsOf(first)[0].status.signal, SIGKILL);
  EXPECT_TRUE(ExitsOf(first)[0].stop_requested);

  group = backend_.StartGroup({Command("learner-0", {"/bin/true"}), Command("learner-1", {"/bin/true"})});
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_EQ(group->size(), 2u);
  EXPECT_EQ(backend_.Find("learner-1"), (*group)[1]);
}

TEST_F(LocalBackendTest, PassesEnvironmentAndWorkingDirectory) {
  fs::create_directories(dir_);
  ProcessSpec spec = Shell("env", "echo \"$ORRERY_TEST_VAR\"; pwd");
  spec.env["ORRERY_TEST_VAR"] = "hello world";
  spec.working_dir = dir_.string();
  ProcessId id = StartOrDie(spec);
  ASSERT_TRUE(RunUntilExits(id, 1));
  EXPECT_THAT(TextsOf(id, Stream::kStdout), ElementsAre("hello world", fs::canonical(dir_).string()));
}

TEST_F(LocalBackendTest, StopAllTerminatesWithSigtermAndEscalatesToSigkillAfterGrace) {
  ProcessId polite = StartOrDie(Command("polite", {"/bin/sleep", "1000"}));
  ProcessId stubborn = StartOrDie(Shell("stubborn", "trap '' TERM; echo ready; while :; do sleep 1; done"));
  ASSERT_TRUE(WaitForLines(loop_, backend_, {stubborn}, "^ready$", kDeadline).ok());

  const absl::Duration grace = absl::Milliseconds(300);
  bool stopped = false;
  auto start = std::chrono::steady_clock::now();
  backend_.StopAll(grace, [&] { stopped = true; });
  EXPECT_FALSE(stopped);  // never inside the call
  ASSERT_TRUE(loop_.RunUntil([&] { return stopped; }, kDeadline));
  auto elapsed = std::chrono::steady_clock::now() - start;

  EXPECT_EQ(ExitsOf(polite)[0].status.signal, SIGTERM);
  EXPECT_EQ(ExitsOf(stubborn)[0].status.signal, SIGKILL);
  EXPECT_GE(elapsed, absl::ToChronoMilliseconds(grace));
  for (const ProcessExit& e : exits_) {
    EXPECT_TRUE(e.stop_requested);
    EXPECT_TRUE(e.final());
  }
  EXPECT_TRUE(backend_.AllExited());
  EXPECT_EQ(backend_.Start(Command("late", {"/bin/true"})).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(LocalBackendTest, StopAllWithNothingRunningStillCallsBack) {
  bool stopped = false;
  backend_.StopAll(absl::Seconds(1), [&] { stopped = true; });
  ASSERT_TRUE(loop_.RunUntil([&] { return stopped; }, kDeadline));
}

TEST_F(LocalBackendTest, RestartsAFailingProcessUpToTheLimitThenReportsFailure) {
  ProcessSpec spec = Shell("learner-1", "echo run; exit 3");
  spec.restart = RestartPolicy{/*max_restarts=*/2, absl::Milliseconds(10), absl::Milliseconds(50)};
  ProcessId id = StartOrDie(spec);
  ASSERT_TRUE(RunUntilExits(id, 3));
  std::vector<ProcessExit> exits = ExitsOf(id);
  ASSERT_EQ(exits.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(exits[i].incarnation, i);
    EXPECT_EQ(exits[i].status.exit_code, 3);
  }
  EXPECT_TRUE(exits[0].will_restart);
  EXPECT_EQ(exits[0].restart_delay, absl::Milliseconds(10));
  EXPECT_EQ(exits[1].restart_delay, absl::Milliseconds(20));
  EXPECT_TRUE(exits[1].will_restart);
  EXPECT_TRUE(exits[2].final());
  EXPECT_THAT(TextsOf(id, Stream::kStdout), ElementsAre("run", "run", "run"));
  EXPECT_EQ(backend_.Info(id)->incarnation, 2);
  EXPECT_EQ(backend_.Info(id)->state, ProcessState::kExited);
  // Nothing further is pending: the loop goes idle without another exit.
  EXPECT_FALSE(loop_.RunUntil([&] { return exits_.size() > 3; }, absl::Milliseconds(200)));
}

TEST_F(LocalBackendTest, CleanExitIsNotRestartedAndRestartUsesTheUpdatedArgv) {
  ProcessSpec spec = Shell("server-0", "echo first; exit 1");
  spec.restart.max_restarts = 5;
  spec.restart.backoff = absl::Milliseconds(1);
  ProcessId id = StartOrDie(spec);
  ASSERT_TRUE(backend_.SetRestartArgv(id, {"/bin/sh", "-c", "echo second; exit 0"}).ok());
  ASSERT_TRUE(RunUntilExits(id, 2));
  EXPECT_THAT(TextsOf(id, Stream::kStdout), ElementsAre("first", "second"));
  EXPECT_TRUE(ExitsOf(id)[1].final());
  EXPECT_TRUE(ExitsOf(id)[1].status.ok());
}

TEST_F(LocalBackendTest, StopAllCancelsAPendingRestart) {
  ProcessSpec spec = Shell("learner-2", "exit 1");
  spec.restart = RestartPolicy{3, absl::Hours(1), absl::Hours(1)};
  ProcessId id = StartOrDie(spec);
  ASSERT_TRUE(RunUntilExits(id, 1));
  EXPECT_EQ(backend_.Info(id)->state, ProcessState::kRestarting);
  bool stopped = false;
  backend_.StopAll(absl::Seconds(1), [&] { stopped = true; });
  ASSERT_TRUE(loop_.RunUntil([&] { return stopped; }, kDeadline));
  ASSERT_EQ(ExitsOf(id).size(), 2u);
  EXPECT_TRUE(ExitsOf(id)[1].final());
  EXPECT_TRUE(ExitsOf(id)[1].stop_requested);
  EXPECT_EQ(backend_.Info(id)->state, ProcessState::kExited);
}

TEST_F(LocalBackendTest, SignalReachesTheProcess) {
  ProcessId id = StartOrDie(Command("victim", {"/bin/sleep", "1000"}));
  ASSERT_TRUE(backend_.Signal(id, SIGUSR1).ok());
  ASSERT_TRUE(RunUntilExits(id, 1));
  EXPECT_EQ(ExitsOf(id)[0].status.signal, SIGUSR1);
  EXPECT_FALSE(ExitsOf(id)[0].stop_requested);
  EXPECT_EQ(backend_.Signal(id, SIGTERM).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(LocalBackendTest, ExitIsReportedPromptlyWhenAGrandchildHoldsThePipes) {
  LocalBackend::Options options;
  options.drain_timeout = absl::Seconds(60);  // the group kill, not this timeout, must end the wait
  EventLoop loop;
  LocalBackend backend(loop, options);
  bool exited = false;
  backend.AddExitListener([&](const ProcessExit&) { exited = true; });
  ASSERT_TRUE(backend.Start(Shell("leaky", "/bin/sleep 1000 & echo started")).ok());
  ASSERT_TRUE(loop.RunUntil([&] { return exited; }, kDeadline));
}

TEST_F(LocalBackendTest, TerminationSignalToTheRunnerStopsEverything) {
  ProcessId id = StartOrDie(Command("server-0", {"/bin/sleep", "1000"}));
  bool stopped = false;
  int received = 0;
  loop_.OnSignals({SIGINT, SIGTERM}, [&](int signal) {
    received = signal;
    backend_.StopAll(absl::Seconds(5), [&] { stopped = true; });
  });
  ASSERT_EQ(::kill(::getpid(), SIGTERM), 0);
  ASSERT_TRUE(loop_.RunUntil([&] { return stopped; }, kDeadline));
  EXPECT_EQ(received, SIGTERM);
  EXPECT_EQ(ExitsOf(id)[0].status.signal, SIGTERM);
}

TEST_F(LocalBackendTest, PeriodicTimerAndPostRunOnTheLoop) {
  int ticks = 0;
  TimerId timer = loop_.RunEvery(absl::Milliseconds(5), [&] { ++ticks; });
  ASSERT_TRUE(loop_.RunUntil([&] { return ticks >= 3; }, kDeadline));
  loop_.Cancel(timer);
  bool posted = false;
  std::thread([&] { loop_.Post([&] { posted = true; }); }).join();
  ASSERT_TRUE(loop_.RunUntil([&] { return posted; }, kDeadline));
  int after_cancel = ticks;
  EXPECT_FALSE(loop_.RunUntil([&] { return ticks > after_cancel; }, absl::Milliseconds(50)));
}

// --- LineWaiter -------------------------------------------------------------------------------

TEST_F(LocalBackendTest, WaitForLinesReturnsEachProcessesMatch) {
  ProcessId a = StartOrDie(Shell("server-0", "echo booting; echo 'ORRERY_SERVER_READY 127.0.0.1:41234'; sleep 1000"));
  ProcessId b = StartOrDie(Shell("server-1", "echo 'ORRERY_SERVER_READY 127.0.0.1:41235' >&2; sleep 1000"));
  absl::StatusOr<std::vector<LineMatch>> ready =
      WaitForLines(loop_, backend_, {a, b}, R"(^ORRERY_SERVER_READY (\S+)$)", kDeadline);
  ASSERT_TRUE(ready.ok()) << ready.status();
  ASSERT_EQ(ready->size(), 2u);
  EXPECT_EQ((*ready)[0].role, "server-0");
  EXPECT_EQ((*ready)[0].groups[1], "127.0.0.1:41234");
  EXPECT_EQ((*ready)[1].groups[1], "127.0.0.1:41235");
  bool stopped = false;
  backend_.StopAll(absl::Seconds(5), [&] { stopped = true; });
  ASSERT_TRUE(loop_.RunUntil([&] { return stopped; }, kDeadline));
}

TEST_F(LocalBackendTest, WaitForLinesFailsWithTheLogTailWhenTheProcessExitsFirst) {
  ProcessSpec spec = Shell("server-3", "echo 'loading model'; echo 'bad flag --lr' >&2; exit 2");
  spec.log_path = (dir_ / "server-3.log").string();
  ProcessId id = StartOrDie(spec);
  absl::StatusOr<std::vector<LineMatch>> ready = WaitForLines(loop_, backend_, {id}, "READY", kDeadline);
  ASSERT_EQ(ready.status().code(), absl::StatusCode::kUnavailable);
  std::string message(ready.status().message());
  EXPECT_THAT(message, HasSubstr("server-3 exited (exit code 2) before printing a line matching 'READY'"));
  EXPECT_THAT(message, HasSubstr(spec.log_path));
  EXPECT_THAT(message, HasSubstr("out| loading model"));
  EXPECT_THAT(message, HasSubstr("err| bad flag --lr"));
}

TEST_F(LocalBackendTest, WaitForLinesTimesOutWithTheLogTail) {
  ProcessId id = StartOrDie(Shell("server-4", "echo 'still loading'; exec sleep 1000"));
  absl::StatusOr<std::vector<LineMatch>> ready =
      WaitForLines(loop_, backend_, {id}, "READY", absl::Milliseconds(300));
  ASSERT_EQ(ready.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(ready.status().message()), HasSubstr("server-4 printed no line matching 'READY' within 300ms"));
  EXPECT_THAT(std::string(ready.status().message()), HasSubstr("out| still loading"));
}

TEST_F(LocalBackendTest, LineWaiterKeepsWaitingAcrossARestart) {
  fs::create_directories(dir_);
  const std::string marker = (dir_ / "second-run").string();
  // Fails on its first run, prints READY on its second.
  ProcessSpec spec = Shell("server-5", absl::StrCat("if [ -e ", marker, " ]; then echo READY; exec sleep 1000; fi; touch ",
                                                    marker, "; exit 1"));
  spec.restart = RestartPolicy{1, absl::Milliseconds(1), absl::Milliseconds(1)};
  ProcessId id = StartOrDie(spec);
  LineWaiter waiter(loop_, backend_);
  std::optional<absl::StatusOr<LineMatch>> result;
  ASSERT_TRUE(waiter.Expect(id, "READY", kDeadline, [&](absl::StatusOr<LineMatch> r) { result = std::move(r); }).ok());
  ASSERT_TRUE(loop_.RunUntil([&] { return result.has_value(); }, kDeadline));
  ASSERT_TRUE(result->ok()) << result->status();
  EXPECT_EQ(backend_.Info(id)->incarnation, 1);
  EXPECT_EQ(waiter.Expect(id, "(", kDeadline, [](absl::StatusOr<LineMatch>) {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace orrery::scheduler
