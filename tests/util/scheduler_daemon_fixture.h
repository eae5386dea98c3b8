// A real `orrery scheduler` daemon for a test: started on 127.0.0.1 (OS-chosen ports) over the
// test's own store, driven over gRPC and through the CLI; every process its jobs started is
// killed when the test ends. Every wait is on an event (a line, a job event, an exit) with a deadline.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "scheduler.grpc.pb.h"
#include "scheduler/adopted_process.h"
#include "scheduler/backends/local_backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/job_store.h"
#include "scheduler/line_waiter.h"
#include "tests/util/process_io.h"

namespace orrery::scheduler::testing {

namespace fs = std::filesystem;

inline constexpr char kToken[] = "test-token-7f3a";
inline constexpr absl::Duration kDeadline = absl::Seconds(45);

// `extra` is appended to the spec ("backend: mpi\n").
inline std::string TinyJobYaml(const std::string& name, const std::string& extra = "") {
  return absl::StrCat("name: ", name, "\nmodel: ", ORRERY_SOURCE_DIR,
                      "/examples/models/mlp.yaml\n"
                      "servers: 1\nlearners: 1\nprotocol: async\nlr: {base: 0.05}\n"
                      "epochs: 1\nlimit_train: 3000\nlimit_test: 1000\nseed: 3\n", extra);
}

// A job that keeps running until it is cancelled: its learner stretches every step 1000-fold.
inline std::string SlowJobYaml(const std::string& name, const std::string& extra = "") {
  return absl::StrCat(TinyJobYaml(name, extra), "slow_learners: [{learner: 0, factor: 1000}]\n");
}

inline bool Alive(int pid) { return ProcessStartTicks(pid).has_value(); }

using CliResult = ::orrery::testing::CommandResult;

class SchedulerDaemonFixture : public ::testing::Test {
 protected:
  SchedulerDaemonFixture() {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("orrery-sched-", ::getpid(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    backend_.AddLineListener([this](const OutputLine& line) {
      if (line.id == daemon_) daemon_lines_.push_back(line.text);
    });
  }

  ~SchedulerDaemonFixture() override {
    stub_.reset();
    if (daemon_running_) StopDaemon();
    // Safety net: nothing a test started may outlive it, whatever failed.
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open((dir_ / "jobs.db").string());
    if (store.ok()) {
      absl::StatusOr<std::vector<JobRecord>> jobs = (*store)->LoadAll();
      if (jobs.ok()) {
        for (const JobRecord& job : *jobs) {
          for (const ProcessRecord& p : job.processes) {
            if (p.pid > 0 && ProcessStartTicks(p.pid) == p.start_ticks) ::kill(-p.pid, SIGKILL);
          }
        }
      }
    }
    fs::remove_all(dir_);
  }

  // Starts `orrery scheduler` on the test's store and connects to it.
  // `extra_args` go on its command line, `env` in its environment.
  void StartDaemon(int slots, const std::vector<std::string>& extra_args = {},
                   const std::map<std::string, std::string>& env = {}) {
    ProcessSpec spec;
    spec.role = absl::StrCat("scheduler-", ++daemons_started_);
    spec.argv = {ORRERY_BINARY, "scheduler", "--listen", "127.0.0.1:0", "--store", (dir_ / "jobs.db").string(),
                 "--slots", absl::StrCat(slots), "--metrics-listen", "127.0.0.1:0"};
    spec.argv.insert(spec.argv.end(), extra_args.begin(), extra_args.end());
    spec.env = env;
    spec.env["ORRERY_SCHEDULER_TOKEN"] = kToken;
    spec.log_path = (dir_ / absl::StrCat(spec.role, ".log")).string();
    absl::StatusOr<ProcessId> id = backend_.Start(spec);
    ASSERT_TRUE(id.ok()) << id.status();
    daemon_ = *id;
    daemon_lines_.clear();
    absl::StatusOr<std::vector<LineMatch>> ready =
        WaitForLines(loop_, backend_, {daemon_}, R"(^ORRERY_SCHEDULER_READY (\S+))", kDeadline);
    ASSERT_TRUE(ready.ok()) << ready.status();
    address_ = (*ready)[0].groups[1];
    for (const std::string& line : daemon_lines_) {
      if (absl::StartsWith(line, "ORRERY_SCHEDULER_METRICS ")) metrics_address_ = line.substr(25);
    }
    daemon_running_ = true;
    stub_ = proto::JobService::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  // Waits for the daemon to exit after `signal`.
  void SignalDaemonAndWait(int signal) {
    bool exited = false;
    ListenerId listener = backend_.AddExitListener([&](const ProcessExit& e) { exited |= e.id == daemon_; });
    ASSERT_TRUE(backend_.Signal(daemon_, signal).ok());
    ASSERT_TRUE(loop_.RunUntil([&] { return exited; }, kDeadline)) << "the scheduler did not exit";
    backend_.RemoveListener(listener);
    daemon_running_ = false;
  }
  void StopDaemon() { SignalDaemonAndWait(SIGTERM); }

  std::unique_ptr<grpc::ClientContext> Context(const std::string& token = kToken,
                                               absl::Duration deadline = kDeadline) {
    auto context = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
    context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    return context;
  }

  grpc::Status Submit(const std::string& yaml, int priority, proto::Job* job, const std::string& token = kToken) {
    proto::SubmitRequest request;
    request.set_spec_yaml(yaml);
    request.set_base_dir(dir_.string());
    request.set_priority(priority);
    return stub_->Submit(Context(token).get(), request, job);
  }

  int64_t SubmitOk(const std::string& yaml, int priority = 0) {
    proto::Job job;
    grpc::Status st = Submit(yaml, priority, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job.id();
  }

  proto::Job Get(int64_t id) {
    proto::GetRequest request;
    request.set_job(absl::StrCat(id));
    proto::Job job;
    grpc::Status st = stub_->Get(Context().get(), request, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job;
  }

  proto::Job Cancel(int64_t id) {
    proto::CancelRequest request;
    request.set_job(absl::StrCat(id));
    proto::Job job;
    grpc::Status st = stub_->Cancel(Context().get(), request, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job;
  }

  std::vector<proto::Job> List() {
    proto::ListResponse response;
    grpc::Status st = stub_->List(Context().get(), proto::ListRequest(), &response);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return {response.jobs().begin(), response.jobs().end()};
  }

  // Follows the job's Events until `done(job)` holds; fails the test at the deadline or if the
  // job ends first.
  proto::Job WaitFor(int64_t id, const std::function<bool(const proto::Job&)>& done, const std::string& what) {
    std::unique_ptr<grpc::ClientContext> context = Context(kToken, kDeadline);
    proto::EventsRequest request;
    request.set_job(absl::StrCat(id));
    std::unique_ptr<grpc::ClientReader<proto::JobEvent>> reader = stub_->Events(context.get(), request);
    proto::JobEvent event;
    proto::Job last;
    while (reader->Read(&event)) {
      last = event.job();
      if (done(last)) {
        context->TryCancel();
        (void)reader->Finish();
        return last;
      }
    }
    grpc::Status st = reader->Finish();
    ADD_FAILURE() << "job " << id << " never became " << what << " (" << st.error_message()
                  << "); last state " << proto::JobState_Name(last.state()) << ": " << last.reason();
    return last;
  }

  proto::Job WaitUntilEnded(int64_t id) {
    return WaitFor(id, [](const proto::Job& j) { return j.finished_unix_ms() != 0; }, "finished");
  }

  // Running with every process (1 shard, 1 learner, the evaluator) started and recorded.
  proto::Job WaitUntilAllProcessesRun(int64_t id) {
    return WaitFor(id, [](const proto::Job& j) { return j.state() == proto::JOB_RUNNING && j.processes_size() == 3; },
                   "running with 3 processes");
  }

  // Running with its 3 processes (1 shard, 1 learner, the evaluator) recorded with their pids
  // (ranks of mpirun or Slurm announce theirs once they run).
  proto::Job WaitUntilPidsKnown(int64_t id) {
    return WaitFor(
        id,
        [](const proto::Job& j) {
          if (j.state() != proto::JOB_RUNNING || j.processes_size() != 3) return false;
          for (const proto::JobProcess& p : j.processes()) {
            if (p.pid() <= 0) return false;
          }
          return true;
        },
        "running with the pids of its 3 processes");
  }

  // The job file the daemon wrote for job `id`'s ranks (mpi, slurm).
  std::string JobFile(int64_t id) const {
    return (dir_ / "jobs-logs" / absl::StrCat("job-", id) / "job.yaml").string();
  }

  // Runs the orrery CLI against this daemon; `env` is prepended ("ORRERY_SCHEDULER_TOKEN=x").
  CliResult Cli(const std::string& args, const std::string& env = "") {
    return ::orrery::testing::RunCommand(absl::StrCat("env ORRERY_SCHEDULER=", address_, " ORRERY_SCHEDULER_TOKEN=",
                                            kToken, " ", env, " ", ORRERY_BINARY, " ", args),
                               dir_ / "cli.err");
  }

  // GET http://<metrics_address_>/metrics: the daemon's.
  std::string Metrics() { return Scrape(metrics_address_); }

  // The address a shard of job `id` serves /metrics at, from its ORRERY_SERVER_METRICS line.
  std::string ShardMetricsAddress(int64_t id) {
    CliResult logs = Cli(absl::StrCat("logs ", id));
    const size_t at = logs.out.find("ORRERY_SERVER_METRICS ");
    if (at == std::string::npos) return "";
    const size_t begin = at + 22;
    return logs.out.substr(begin, logs.out.find('\n', begin) - begin);
  }

  // GET http://<address>/metrics ("" when it cannot be reached).
  std::string Scrape(const std::string& address) {
    std::vector<std::string> parts = absl::StrSplit(address, ':');
    int port = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) return "";
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr);
    timeval timeout{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    std::string response;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      const std::string request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
      if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
      }
    }
    ::close(fd);
    return response;
  }

  fs::path dir_;
  EventLoop loop_;
  LocalBackend backend_{loop_};
  ProcessId daemon_ = 0;
  int daemons_started_ = 0;
  bool daemon_running_ = false;
  std::vector<std::string> daemon_lines_;
  std::string address_;
  std::string metrics_address_;
  std::unique_ptr<proto::JobService::Stub> stub_;
};

}  // namespace orrery::scheduler::testing
