// The scheduler daemon end to end: a real `orrery scheduler` process on 127.0.0.1 (OS-chosen
// ports) running real `orrery server`/`learner` processes, driven over gRPC and through the CLI.
// Every wait is on an event (a line, a job event, a process exit) with a deadline; nothing sleeps.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "scheduler.grpc.pb.h"
#include "scheduler/adopted_process.h"
#include "scheduler/backends/local_backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/job_spec.h"
#include "scheduler/job_store.h"
#include "scheduler/line_waiter.h"
#include "scheduler/run_job.h"
#include "tests/util/process_io.h"
#include "tests/util/scheduler_daemon_fixture.h"

namespace orrery::scheduler {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using namespace ::orrery::scheduler::testing;  // NOLINT(build/namespaces): the fixture's helpers

// A job whose one learner trains for several seconds, restarted at most `max_restarts` times.
std::string RestartableJobYaml(const std::string& name, int max_restarts) {
  return TinyJobYaml(name, absl::StrCat("slow_learners: [{learner: 0, factor: 100}]\n"
                                        "restart: {max_restarts: ", max_restarts, ", backoff_seconds: 0.1}\n"));
}

// The ended job `done` counts its learner finished, and learner-0, whose first process `old_pid`
// died, ran once more and exited 0 as a child of the restarted daemon (so its exit is known).
void ExpectLearnerRestartedAndFinished(const proto::Job& done, int old_pid) {
  EXPECT_EQ(nlohmann::json::parse(done.result_json())["learners_finished"], 1);
  for (const proto::JobProcess& p : done.processes()) {
    if (p.role() != "learner-0") continue;
    EXPECT_NE(p.pid(), old_pid);
    EXPECT_EQ(p.incarnation(), 1);
    EXPECT_THAT(p.exit(), HasSubstr("exit code 0"));
  }
}

// The recorded pid of the process `role` of `job`; 0 when there is none.
int PidOf(const proto::Job& job, const std::string& role) {
  for (const proto::JobProcess& p : job.processes()) {
    if (p.role() == role) return p.pid();
  }
  return 0;
}

// Waits until process `pid` is gone (a zombie counts as gone); false if it is not by `timeout`.
bool GoneWithin(int pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (Alive(pid) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  return !Alive(pid);
}

class SchedulerDaemonTest : public SchedulerDaemonFixture {
 protected:
  // A process of a job with checkpoints and a restart policy, `role` (server-0 or the evaluator),
  // that dies while the job is re-attached (`after_restart`) or while no daemon runs is restarted
  // by the daemon from the argv the first one stored (a shard at the same address, from its
  // checkpoint); the learner rides it out and the job ends as if nothing had happened.
  void ExpectRestartedByTheNewDaemon(const std::string& role, bool after_restart) {
    StartDaemon(2);
    const std::string checkpoints = (dir_ / "checkpoints").string();
    const int64_t id = SubmitOk(absl::StrCat(RestartableJobYaml("relaunched", 1), "checkpoint: {dir: ", checkpoints,
                                             ", every_seconds: 0.2}\n"));
    const proto::Job before = WaitUntilAllProcessesRun(id);
    // Killed once the shard has checkpointed a few updates, so that what it resumes from shows.
    const int checkpointed = WaitForCheckpointedVersion(id, 2);
    ASSERT_GE(checkpointed, 2) << "no checkpoint of version 2 or later within the deadline";
    SignalDaemonAndWait(SIGKILL);
    const int victim = PidOf(before, role);
    ASSERT_GT(victim, 0);
    if (after_restart) StartDaemon(2);
    ASSERT_TRUE(Alive(victim)) << role << " must still be running when it is killed";
    ASSERT_EQ(::kill(victim, SIGKILL), 0);
    if (!after_restart) {
      ASSERT_TRUE(GoneWithin(victim, absl::Seconds(5))) << "before the new daemon looks";
      StartDaemon(2);
    }
    const proto::Job done = WaitUntilEnded(id);
    ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
    EXPECT_GT(done.test_accuracy(), 0.3) << "chance is 0.1";
    const nlohmann::json result = nlohmann::json::parse(done.result_json());
    EXPECT_EQ(result["learners_finished"], 1);
    EXPECT_EQ(result["shard_restarts"], role == "server-0" ? 1 : 0);
    EXPECT_EQ(result["evaluator_restarts"], role == "evaluator" ? 1 : 0);
    for (const proto::JobProcess& p : done.processes()) {
      if (p.role() == role) {
        EXPECT_NE(p.pid(), victim);
        EXPECT_EQ(p.incarnation(), 1);
        // A child of the restarted daemon, stopped by it at the end: its exit is known.
        EXPECT_THAT(p.exit(), HasSubstr("exit code 0 (stop requested)"));
      } else {
        EXPECT_EQ(p.incarnation(), 0) << p.role() << " rode out the restart";
      }
    }
    for (const proto::JobProcess& p : before.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
    // The restarted process's output went to its log file, through the daemon that started it.
    const CliResult logs = Cli(absl::StrCat("logs ", id));
    EXPECT_EQ(logs.exit_code, 0) << logs.err;
    if (role == "evaluator") {
      EXPECT_THAT(logs.out, HasSubstr("evaluator out| ORRERY_EVAL {\"final\":true"));
      return;
    }
    std::smatch restored;
    ASSERT_TRUE(std::regex_search(logs.out, restored, std::regex(R"(server-0 out\| ORRERY_SERVER_RESTORED .*"version":(\d+))")))
        << logs.out;
    EXPECT_GE(std::stoi(restored[1]), checkpointed) << "it resumed from an older checkpoint than it had written";
  }

  // Waits (up to 30 s) until shard 0 of job `id` has announced a checkpoint of `version` or
  // later in its log file; returns the latest version announced by then.
  int WaitForCheckpointedVersion(int64_t id, int version) {
    const fs::path log = dir_ / "jobs-logs" / absl::StrCat("job-", id) / "server-0.log";
    const std::regex line(R"(ORRERY_SERVER_CHECKPOINT \{"shard":0,"version":(\d+)\})");
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    int latest = -1;
    while (latest < version && absl::Now() < deadline) {
      std::ifstream in(log);
      std::string text;
      std::smatch m;
      while (std::getline(in, text)) {
        if (std::regex_search(text, m, line)) latest = std::max(latest, std::stoi(m[1]));
      }
      if (latest < version) absl::SleepFor(absl::Milliseconds(20));
    }
    return latest;
  }
};

TEST_F(SchedulerDaemonTest, SubmittedJobRunsToSucceededWithLogsStatusAndMetrics) {
  StartDaemon(2);
  const int64_t id = SubmitOk(TinyJobYaml("tiny"));
  // Follow the logs from the start, on another thread, until the job ends.
  std::vector<std::string> followed;
  std::thread follower([&] {
    std::unique_ptr<grpc::ClientContext> context = Context();
    proto::LogsRequest request;
    request.set_job(absl::StrCat(id));
    request.set_follow(true);
    std::unique_ptr<grpc::ClientReader<proto::LogLine>> reader = stub_->Logs(context.get(), request);
    proto::LogLine line;
    while (reader->Read(&line)) followed.push_back(line.line());
    grpc::Status st = reader->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
  });
  proto::Job job = WaitUntilEnded(id);
  follower.join();
  ASSERT_EQ(job.state(), proto::JOB_SUCCEEDED) << job.reason();
  EXPECT_GT(job.test_accuracy(), 0.3) << "chance is 0.1";
  nlohmann::json result = nlohmann::json::parse(job.result_json());
  EXPECT_DOUBLE_EQ(result["test_accuracy"].get<double>(), job.test_accuracy());
  ASSERT_EQ(job.processes_size(), 3);
  for (const proto::JobProcess& p : job.processes()) EXPECT_THAT(p.exit(), HasSubstr("exit code 0")) << p.role();

  auto has = [](const std::vector<std::string>& lines, const std::string& text) {
    for (const std::string& l : lines) {
      if (absl::StrContains(l, text)) return true;
    }
    return false;
  };
  EXPECT_TRUE(has(followed, "ORRERY_SERVER_READY")) << followed.size() << " lines followed";
  EXPECT_TRUE(has(followed, R"("final":true)")) << "the final evaluation streams before the end";

  CliResult logs = Cli(absl::StrCat("logs ", id));
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_THAT(logs.out, HasSubstr("job1:learner-0 sys| exited: exit code 0"));

  CliResult status = Cli("status tiny --output json");
  ASSERT_EQ(status.exit_code, 0) << status.err;
  nlohmann::json j = nlohmann::json::parse(status.out);
  EXPECT_EQ(j["state"], "succeeded");
  EXPECT_EQ(j["id"], id);

  CliResult table = Cli("list");
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("succeeded"));

  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr("orrery_scheduler_jobs{state=\"succeeded\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("orrery_scheduler_queue_length 0"));
}

TEST_F(SchedulerDaemonTest, CancelStopsEveryProcessOfARunningJob) {
  StartDaemon(2);
  const int64_t id = SubmitOk(SlowJobYaml("slow"));
  proto::Job running = WaitUntilAllProcessesRun(id);
  // Its shard serves Prometheus metrics while it runs.
  const std::string shard_metrics = ShardMetricsAddress(id);
  ASSERT_FALSE(shard_metrics.empty()) << "no ORRERY_SERVER_METRICS line in the job's logs";
  EXPECT_THAT(Scrape(shard_metrics), HasSubstr("orrery_shard_pushes_total{job=\"slow\",shard=\"0\"}"));
  proto::Job cancelling = Cancel(id);
  EXPECT_TRUE(cancelling.cancel_requested());
  proto::Job job = WaitUntilEnded(id);
  EXPECT_EQ(job.state(), proto::JOB_CANCELLED) << job.reason();
  for (const proto::JobProcess& p : running.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
  for (const proto::JobProcess& p : job.processes()) EXPECT_THAT(p.exit(), HasSubstr("stop requested")) << p.role();
  // Cancelling again is harmless; the CLI says it is over.
  CliResult again = Cli(absl::StrCat("cancel ", id));
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("cancelled"));
}

TEST_F(SchedulerDaemonTest, SlotsMakeLaterJobsWaitAndPriorityGoesFirst) {
  StartDaemon(2);  // each job needs 2 (1 shard + 1 learner)
  const int64_t a = SubmitOk(SlowJobYaml("holder"));
  WaitUntilAllProcessesRun(a);
  const int64_t b = SubmitOk(TinyJobYaml("low"), 0);
  const int64_t c = SubmitOk(TinyJobYaml("high"), 5);
  const int64_t d = SubmitOk(TinyJobYaml("low-too"), 0);
  EXPECT_EQ(Get(b).state(), proto::JOB_QUEUED);
  EXPECT_EQ(Get(c).queue_position(), 1) << "higher priority first";
  EXPECT_EQ(Get(c).reason(), "waiting for 2 slots (0 of 2 free)");
  EXPECT_EQ(Get(b).queue_position(), 2);
  EXPECT_EQ(Get(b).reason(), "waiting behind 1 queued job(s)");
  EXPECT_EQ(Get(d).queue_position(), 3);
  EXPECT_THAT(Metrics(), HasSubstr("orrery_scheduler_queue_length 3"));

  // A queued job that is cancelled never starts.
  proto::Job cancelled = Cancel(b);
  EXPECT_EQ(cancelled.state(), proto::JOB_CANCELLED);
  EXPECT_EQ(cancelled.started_unix_ms(), 0);
  EXPECT_EQ(Get(d).queue_position(), 2);

  Cancel(a);
  const proto::Job holder = WaitUntilEnded(a);
  const proto::Job high = WaitUntilEnded(c);
  EXPECT_EQ(high.state(), proto::JOB_SUCCEEDED) << high.reason();
  EXPECT_GE(high.started_unix_ms(), holder.finished_unix_ms()) << "started before the slots were free";
  const proto::Job low = WaitUntilEnded(d);
  EXPECT_EQ(low.state(), proto::JOB_SUCCEEDED) << low.reason();
  EXPECT_GE(low.started_unix_ms(), high.finished_unix_ms()) << "two 2-slot jobs ran at once on 2 slots";
  EXPECT_EQ(Get(b).processes_size(), 0);
}

TEST_F(SchedulerDaemonTest, MemoryMakesALaterLocalJobWaitAndAJobThatCannotFitIsRefused) {
  absl::StatusOr<JobSpec> tiny = ParseJobSpec(TinyJobYaml("tiny"), "/");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  const std::optional<int64_t> each = JobMemoryEstimate(*tiny);
  ASSERT_TRUE(each.has_value());
  // Memory for one such job but not two; slots for four.
  const int64_t lent = *each + *each / 2;
  StartDaemon(8, {"--memory", absl::StrCat(lent)});
  EXPECT_THAT(Metrics(), HasSubstr(absl::StrCat("orrery_scheduler_memory_bytes{kind=\"total\"} ", lent)));

  std::string three = TinyJobYaml("three");
  three.replace(three.find("learners: 1"), 11, "learners: 3");
  absl::StatusOr<JobSpec> three_spec = ParseJobSpec(three, "/");
  ASSERT_TRUE(three_spec.ok()) << three_spec.status();
  ASSERT_GT(JobMemoryEstimate(*three_spec).value_or(0), lent) << "the test needs a job that cannot fit";
  proto::Job job;
  grpc::Status st = Submit(three, 0, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("this scheduler lends to jobs (orrery scheduler --memory)"));
  EXPECT_TRUE(List().empty()) << "a refused job must not be stored";

  const int64_t a = SubmitOk(SlowJobYaml("holder"));
  WaitUntilAllProcessesRun(a);
  EXPECT_THAT(Metrics(), HasSubstr(absl::StrCat("orrery_scheduler_memory_bytes{kind=\"used\"} ", *each)));
  const int64_t b = SubmitOk(TinyJobYaml("waiter"));
  EXPECT_THAT(Get(b).reason(), ::testing::MatchesRegex("waiting for [0-9]+ MiB of memory \\([0-9]+ of [0-9]+ MiB free\\)"));
  const CliResult listed = Cli("list");
  EXPECT_THAT(listed.out, HasSubstr("queue position 1: waiting for ")) << listed.err;
  Cancel(a);
  const proto::Job holder = WaitUntilEnded(a);
  const proto::Job waiter = WaitUntilEnded(b);
  EXPECT_EQ(waiter.state(), proto::JOB_SUCCEEDED) << waiter.reason();
  EXPECT_GE(waiter.started_unix_ms(), holder.finished_unix_ms()) << "two jobs ran at once in memory for one";
  EXPECT_THAT(Metrics(), HasSubstr("orrery_scheduler_memory_bytes{kind=\"used\"} 0"));
}

TEST_F(SchedulerDaemonTest, BadSpecIsRefusedNamingTheFieldAndNothingIsStored) {
  StartDaemon(2);
  proto::Job job;
  std::string bad = TinyJobYaml("bad");
  bad.replace(bad.find("lr: {base: 0.05}"), 16, "lr: {base: 0.05, staleness: inversee}");
  grpc::Status st = Submit(bad, 0, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("lr.staleness"));

  st = Submit(absl::StrCat(TinyJobYaml("typo"), "epochz: 2\n"), 0, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("epochz"));

  std::string big = TinyJobYaml("big");
  big.replace(big.find("learners: 1"), 11, "learners: 4");
  st = Submit(big, 0, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("5 slots"));

  // 1024 feature maps of 28x28 in batches of 65,536: about 840 GB of activations, more than any
  // machine this runs on has in all.
  std::ofstream(dir_ / "wide.yaml") << "layers: [{type: conv, filters: 1024, kernel: 3, padding: 1}, "
                                       "{type: flatten}, {type: dense, units: 10}]\n";
  std::string huge = TinyJobYaml("huge");
  huge.replace(huge.find("model: "), huge.find('\n', huge.find("model: ")) - huge.find("model: "), "model: wide.yaml");
  st = Submit(absl::StrCat(huge, "batch: 65536\n"), 0, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("this scheduler lends to jobs (orrery scheduler --memory)"));

  st = Submit(absl::StrCat(TinyJobYaml("bound"), "bind: cores\n"), 0, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("bind: cores is for `orrery run`"));

  EXPECT_TRUE(List().empty()) << "a refused job must not be stored";

  // The CLI: exit 1, one line naming the file and the field.
  std::ofstream(dir_ / "bad.yaml") << bad;
  CliResult r = Cli(absl::StrCat("submit ", (dir_ / "bad.yaml").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("bad.yaml: lr.staleness"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(List().empty());
}

TEST_F(SchedulerDaemonTest, RequestsWithoutTheRightTokenAreRefused) {
  StartDaemon(2);
  proto::Job job;
  grpc::Status st = Submit(TinyJobYaml("anon"), 0, &job, /*token=*/"");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  st = Submit(TinyJobYaml("wrong"), 0, &job, /*token=*/"not-the-token");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  proto::ListResponse response;
  EXPECT_EQ(stub_->List(Context("nope").get(), proto::ListRequest(), &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(List().empty()) << "an unauthenticated submit must not be stored";

  // The CLI's documented exit codes: 4 unauthenticated, 3 no such job, 2 usage.
  std::ofstream(dir_ / "job.yaml") << TinyJobYaml("cli");
  CliResult r = Cli(absl::StrCat("submit ", (dir_ / "job.yaml").string()), "ORRERY_SCHEDULER_TOKEN=wrong");
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_THAT(r.err, HasSubstr("token"));
  r = Cli("status 999");
  EXPECT_EQ(r.exit_code, 3) << r.err;
  r = Cli("list", "ORRERY_SCHEDULER=");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(List().empty());
}

TEST_F(SchedulerDaemonTest, KillNineLosesNothingAndTheRestartReattachesToTheRunningJob) {
  StartDaemon(2);
  const int64_t running_id = SubmitOk(SlowJobYaml("survivor"));
  const proto::Job before = WaitUntilAllProcessesRun(running_id);
  const int64_t queued_id = SubmitOk(TinyJobYaml("waiting"));
  ASSERT_EQ(Get(queued_id).state(), proto::JOB_QUEUED);

  SignalDaemonAndWait(SIGKILL);
  for (const proto::JobProcess& p : before.processes()) {
    EXPECT_TRUE(Alive(p.pid())) << p.role() << " died with the scheduler";
  }

  StartDaemon(2);
  std::vector<proto::Job> jobs = List();
  ASSERT_EQ(jobs.size(), 2u) << "a job was lost";
  const proto::Job after = Get(running_id);
  EXPECT_EQ(after.name(), "survivor");
  EXPECT_FALSE(after.reason().empty()) << "a re-attached or lost job says why";
  ASSERT_TRUE(after.state() == proto::JOB_RUNNING || after.state() == proto::JOB_LOST)
      << proto::JobState_Name(after.state());
  const proto::Job waiting = Get(queued_id);
  EXPECT_EQ(waiting.name(), "waiting");
  EXPECT_EQ(waiting.submitted_unix_ms(), Get(queued_id).submitted_unix_ms());

  if (after.state() == proto::JOB_RUNNING) {
    EXPECT_TRUE(after.reattached());
    EXPECT_EQ(waiting.state(), proto::JOB_QUEUED) << "the re-attached job still holds the slots";
    // The re-attached job can still be cancelled: every process of it stops.
    Cancel(running_id);
    const proto::Job cancelled = WaitUntilEnded(running_id);
    EXPECT_EQ(cancelled.state(), proto::JOB_CANCELLED) << cancelled.reason();
  }
  for (const proto::JobProcess& p : before.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
  // Then the queued job gets its turn.
  const proto::Job done = WaitUntilEnded(queued_id);
  EXPECT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
}

TEST_F(SchedulerDaemonTest, AQueuedJobThatNoLongerFitsAfterARestartFailsInsteadOfBlockingTheQueue) {
  absl::StatusOr<JobSpec> tiny = ParseJobSpec(TinyJobYaml("tiny"), "/");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  const std::optional<int64_t> each = JobMemoryEstimate(*tiny);
  ASSERT_TRUE(each.has_value());
  StartDaemon(2);
  const int64_t holder = SubmitOk(SlowJobYaml("holder"));
  WaitUntilAllProcessesRun(holder);
  const int64_t queued = SubmitOk(TinyJobYaml("queued"));
  ASSERT_EQ(Get(queued).state(), proto::JOB_QUEUED);

  SignalDaemonAndWait(SIGKILL);
  StartDaemon(2, {"--memory", absl::StrCat(*each / 2)});
  const proto::Job failed = Get(queued);
  EXPECT_EQ(failed.state(), proto::JOB_FAILED);
  EXPECT_THAT(failed.reason(), HasSubstr("less memory than the job needs"));
  EXPECT_THAT(failed.reason(), HasSubstr("(orrery scheduler --memory)"));
  EXPECT_EQ(failed.started_unix_ms(), 0);

  // The same for slots: another job queues behind the re-attached one, and the next restart has
  // fewer slots than it needs.
  const bool still_running = Get(holder).state() == proto::JOB_RUNNING;
  if (still_running) {
    SignalDaemonAndWait(SIGKILL);
    StartDaemon(2);  // lending all the memory again, so that the job can be submitted
    const int64_t wide = SubmitOk(TinyJobYaml("wide"));
    ASSERT_EQ(Get(wide).state(), proto::JOB_QUEUED);
    SignalDaemonAndWait(SIGKILL);
    StartDaemon(1);
    const proto::Job refused = Get(wide);
    EXPECT_EQ(refused.state(), proto::JOB_FAILED);
    EXPECT_THAT(refused.reason(), HasSubstr("fewer slots than the job needs: 2 slots, and it has 1"));
  }
  // The re-attached job still runs (beyond the new total: an earlier configuration admitted it).
  const proto::Job after = Get(holder);
  if (after.state() == proto::JOB_RUNNING) {
    Cancel(holder);
    EXPECT_EQ(WaitUntilEnded(holder).state(), proto::JOB_CANCELLED);
  }
}

TEST_F(SchedulerDaemonTest, AJobReattachedAfterKillNineRunsToItsEndWithItsResult) {
  StartDaemon(2);
  // Its learner trains for a few seconds, so the daemon dies while the job runs. Whether the
  // learner ends before or after the restart, the restarted daemon asks the evaluator for its
  // final evaluation, stops the shard and reads the result from the events files.
  const int64_t id = SubmitOk(TinyJobYaml("outlives", "slow_learners: [{learner: 0, factor: 40}]\n"));
  const proto::Job before = WaitUntilAllProcessesRun(id);
  SignalDaemonAndWait(SIGKILL);
  StartDaemon(2);
  const proto::Job done = WaitUntilEnded(id);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  EXPECT_TRUE(done.reattached());
  EXPECT_THAT(done.reason(), HasSubstr("events files"));
  EXPECT_GT(done.test_accuracy(), 0.3) << "chance is 0.1";
  const nlohmann::json result = nlohmann::json::parse(done.result_json());
  EXPECT_DOUBLE_EQ(result["test_accuracy"].get<double>(), done.test_accuracy());
  EXPECT_EQ(result["learners_finished"], 1);
  EXPECT_GT(result["updates_applied"].get<int>(), 0);
  for (const proto::JobProcess& p : before.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
  // The logs have the learner's end and the final evaluation, whether they were printed before
  // the restart (to the first daemon, into the log files) or after (into the events files only).
  const CliResult logs = Cli(absl::StrCat("logs ", id));
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_THAT(logs.out, HasSubstr("learner-0 "));
  EXPECT_THAT(logs.out, ::testing::ContainsRegex("learner-0 (out|evt)\\| ORRERY_LEARNER_DONE "));
  EXPECT_THAT(logs.out, ::testing::ContainsRegex("evaluator (out|evt)\\| ORRERY_EVAL "));
  size_t from_events = 0;
  for (size_t at = logs.out.find(" evt| "); at != std::string::npos; at = logs.out.find(" evt| ", at + 1)) ++from_events;
  std::fprintf(stderr, "logs: %zu line(s) from events files\n", from_events);
  // What the processes printed after the daemon died went on into their log files, relayed.
  for (const char* role : {"learner-0", "server-0", "evaluator"}) {
    EXPECT_THAT(logs.out, ::testing::ContainsRegex(absl::StrCat(role, " sys\\| its output reader \\(the scheduler\\) went away")))
        << role << "\n" << logs.out;
  }
  for (const proto::JobProcess& p : done.processes()) {
    if (p.role() != "learner-0") {
      EXPECT_THAT(p.exit(), HasSubstr("stop requested")) << p.role();
    }
    // Known whether the first daemon saw the exit or the process recorded it for the second.
    EXPECT_THAT(p.exit(), ::testing::StartsWith("exit code 0")) << p.role();
  }
}

// A learner that crashes after the daemon came back is restarted by it, from the spec the first
// daemon stored, as the job's restart policy says; the job then ends as if nothing had happened.
TEST_F(SchedulerDaemonTest, ALearnerCrashingAfterTheRestartIsRestartedFromTheStoredSpec) {
  StartDaemon(2);
  const int64_t id = SubmitOk(RestartableJobYaml("relaunch", 2));
  const proto::Job before = WaitUntilAllProcessesRun(id);
  SignalDaemonAndWait(SIGKILL);
  StartDaemon(2);
  ASSERT_EQ(Get(id).state(), proto::JOB_RUNNING) << Get(id).reason();
  const int learner = PidOf(before, "learner-0");
  ASSERT_GT(learner, 0);
  ASSERT_TRUE(Alive(learner)) << "the learner must still be training when it is killed";
  ASSERT_EQ(::kill(learner, SIGKILL), 0);
  const proto::Job done = WaitUntilEnded(id);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  EXPECT_GT(done.test_accuracy(), 0.3) << "chance is 0.1";
  ExpectLearnerRestartedAndFinished(done, learner);
  for (const proto::JobProcess& p : before.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
  // The restarted learner's output went to its log file, through the daemon that started it.
  const CliResult logs = Cli(absl::StrCat("logs ", id));
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_THAT(logs.out, ::testing::ContainsRegex("learner-0 out\\| ORRERY_LEARNER_DONE "));
}

// The same for a learner that died while no daemon ran: the restarted one finds it gone and
// unfinished, and starts it again at once.
TEST_F(SchedulerDaemonTest, ALearnerThatDiedWhileNoDaemonRanIsRestartedWhenOneComesBack) {
  StartDaemon(2);
  const int64_t id = SubmitOk(RestartableJobYaml("relaunch-down", 1));
  const proto::Job before = WaitUntilAllProcessesRun(id);
  SignalDaemonAndWait(SIGKILL);
  const int learner = PidOf(before, "learner-0");
  ASSERT_GT(learner, 0);
  ASSERT_EQ(::kill(learner, SIGKILL), 0);
  ASSERT_TRUE(GoneWithin(learner, absl::Seconds(5))) << "before the new daemon looks";
  StartDaemon(2);
  const proto::Job done = WaitUntilEnded(id);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  ExpectLearnerRestartedAndFinished(done, learner);
}

TEST_F(SchedulerDaemonTest, AShardCrashingAfterTheRestartIsRestartedFromItsCheckpoint) {
  ExpectRestartedByTheNewDaemon("server-0", /*after_restart=*/true);
}

TEST_F(SchedulerDaemonTest, AShardThatDiedWhileNoDaemonRanIsRestartedWhenOneComesBack) {
  ExpectRestartedByTheNewDaemon("server-0", /*after_restart=*/false);
}

TEST_F(SchedulerDaemonTest, AnEvaluatorCrashingAfterTheRestartIsRestartedFromTheStoredSpec) {
  ExpectRestartedByTheNewDaemon("evaluator", /*after_restart=*/true);
}

TEST_F(SchedulerDaemonTest, AReattachedJobWhoseEvaluatorDiesFailsAndStopsTheRest) {
  StartDaemon(2);
  const int64_t id = SubmitOk(SlowJobYaml("orphaned"));
  const proto::Job before = WaitUntilAllProcessesRun(id);
  SignalDaemonAndWait(SIGKILL);
  StartDaemon(2);
  ASSERT_EQ(Get(id).state(), proto::JOB_RUNNING) << Get(id).reason();
  const int evaluator = PidOf(before, "evaluator");
  ASSERT_GT(evaluator, 0);
  ASSERT_EQ(::kill(evaluator, SIGKILL), 0);
  const proto::Job failed = WaitUntilEnded(id);
  EXPECT_EQ(failed.state(), proto::JOB_FAILED) << failed.reason();
  EXPECT_THAT(failed.reason(), HasSubstr("evaluator exited while the learners trained"));
  for (const proto::JobProcess& p : before.processes()) EXPECT_FALSE(Alive(p.pid())) << p.role() << " survived";
}

TEST_F(SchedulerDaemonTest, TlsChannelServesOnlyClientsThatTrustItsCertificate) {
  const std::string certs = (dir_ / "certs").string();
  CliResult made = ::orrery::testing::RunCommand(
      absl::StrCat(ORRERY_SOURCE_DIR, "/scripts/make-test-certs.sh ", certs), dir_ / "certs.err");
  if (made.exit_code != 0) GTEST_SKIP() << "scripts/make-test-certs.sh failed (is openssl installed?): " << made.err;
  StartDaemon(2, {"--tls-cert", certs + "/node.pem", "--tls-key", certs + "/node.key"});

  // The CLI with the scheduler's CA: the token still decides.
  std::ofstream(dir_ / "job.yaml") << TinyJobYaml("over-tls");
  const std::string ca = absl::StrCat("--tls-ca ", certs, "/ca.pem ");
  CliResult r = Cli(absl::StrCat("submit ", ca, (dir_ / "job.yaml").string()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Cli(absl::StrCat("list ", ca, "--output json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 1u);
  r = Cli(absl::StrCat("list ", ca), "ORRERY_SCHEDULER_TOKEN=wrong");
  EXPECT_EQ(r.exit_code, 4) << r.err;

  // Plaintext, and a client trusting another CA, get no answer; a missing CA file is a usage error.
  r = Cli("list");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("scheduler unavailable"));
  r = Cli(absl::StrCat("list --tls-ca ", certs, "/other-ca.pem"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  r = Cli(absl::StrCat("list --tls-ca ", certs, "/missing.pem"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("missing.pem"));
  proto::ListResponse response;
  EXPECT_EQ(stub_->List(Context().get(), proto::ListRequest(), &response).error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace orrery::scheduler
