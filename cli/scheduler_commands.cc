// `orrery scheduler` (the daemon) and its clients: `orrery submit`, `status`, `logs`, `cancel`,
// `list`. Client exit codes: 0 ok, 1 the command failed, 2 bad usage, 3 no such job,
// 4 unauthenticated (see docs/scheduler.md).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "nlohmann/json.hpp"
#include "scheduler.grpc.pb.h"
#include "scheduler/job_service.h"
#include "scheduler/job_spec.h"
#include "server/tls.h"
#include "scheduler/scheduler_daemon.h"

namespace orrery::cli {
namespace {

namespace fs = std::filesystem;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNotFound = 3;
constexpr int kExitUnauthenticated = 4;
constexpr char kTokenEnv[] = "ORRERY_SCHEDULER_TOKEN";
constexpr char kSchedulerEnv[] = "ORRERY_SCHEDULER";

std::string SelfPath() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "orrery";
  buf[n] = '\0';
  return buf;
}

int Complain(const std::string& command, int code, const std::string& message) {
  std::fprintf(stderr, "orrery %s: %s\n", command.c_str(), message.c_str());
  return code;
}

// The token from `file` (first line, trimmed) or else from $ORRERY_SCHEDULER_TOKEN; "" if neither.
absl::StatusOr<std::string> ReadToken(const std::string& file) {
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("--token-file ", file, ": cannot read it"));
    std::string token;
    std::getline(in, token);
    token = std::string(absl::StripAsciiWhitespace(token));
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("--token-file ", file, ": empty"));
    return token;
  }
  const char* env = std::getenv(kTokenEnv);
  return env != nullptr ? std::string(absl::StripAsciiWhitespace(env)) : std::string();
}

// Flags every client command shares.
struct ClientFlags {
  std::string scheduler;
  std::string token_file;
  std::string output = "table";
  double timeout = 30;
  server::TlsFiles tls;  // ca: the scheduler's CA (TLS); cert + key: this client's (mutual TLS)
};

void AddClientFlags(CLI::App* cmd, ClientFlags& flags) {
  cmd->add_option("--scheduler", flags.scheduler, "Scheduler address host:port (default: $ORRERY_SCHEDULER)")
      ->envname(kSchedulerEnv);
  cmd->add_option("--token-file", flags.token_file,
                  "File holding the scheduler's bearer token (default: $ORRERY_SCHEDULER_TOKEN)");
  cmd->add_option("--output", flags.output, "table (for people) or json (for scripts)")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  cmd->add_option("--timeout", flags.timeout, "Seconds to wait for each answer")->capture_default_str();
  cmd->add_option("--tls-ca", flags.tls.ca, "PEM CA of a scheduler serving TLS (default: $ORRERY_SCHEDULER_CA)")
      ->envname("ORRERY_SCHEDULER_CA");
  cmd->add_option("--tls-cert", flags.tls.cert, "PEM certificate for a scheduler that asks for one (mutual TLS)")
      ->envname("ORRERY_SCHEDULER_CERT");
  cmd->add_option("--tls-key", flags.tls.key, "PEM private key of --tls-cert")->envname("ORRERY_SCHEDULER_KEY");
}

// A connected client: the stub and the metadata every call carries.
class Client {
 public:
  static int Connect(const std::string& command, const ClientFlags& flags, std::unique_ptr<Client>* out) {
    if (flags.scheduler.empty()) {
      return Complain(command, kExitUsage, "no scheduler address: pass --scheduler HOST:PORT or set ORRERY_SCHEDULER");
    }
    absl::StatusOr<std::string> token = ReadToken(flags.token_file);
    if (!token.ok()) return Complain(command, kExitUsage, std::string(token.status().message()));
    auto client = std::make_unique<Client>();
    client->command_ = command;
    client->token_ = *token;
    client->timeout_ = flags.timeout;
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = server::MakeChannelCredentials(flags.tls);
    if (!credentials.ok()) return Complain(command, kExitUsage, std::string(credentials.status().message()));
    client->stub_ = proto::JobService::NewStub(grpc::CreateChannel(flags.scheduler, *credentials));
    *out = std::move(client);
    return 0;
  }

  // A context with the token and, unless `streaming`, the deadline.
  std::unique_ptr<grpc::ClientContext> Context(bool streaming = false) const {
    auto context = std::make_unique<grpc::ClientContext>();
    if (!token_.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
    if (!streaming) {
      context->set_deadline(std::chrono::system_clock::now() +
                            std::chrono::milliseconds(static_cast<int64_t>(timeout_ * 1000)));
    }
    return context;
  }

  // Prints why `status` failed and returns the documented exit code.
  int Fail(const grpc::Status& status) const {
    int code = kExitFailed;
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) code = kExitNotFound;
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) code = kExitUnauthenticated;
    std::string message = status.error_message();
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE) message = absl::StrCat("scheduler unavailable: ", message);
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) message = "the scheduler did not answer in time";
    return Complain(command_, code, message);
  }

  proto::JobService::Stub& stub() { return *stub_; }

 private:
  std::string command_;
  std::string token_;
  double timeout_ = 30;
  std::unique_ptr<proto::JobService::Stub> stub_;
};

std::string StateName(int state) {
  std::optional<scheduler::JobState> s = scheduler::JobStateFromProto(state);
  return s ? scheduler::JobStateName(*s) : "unknown";
}

std::string Time(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms), absl::LocalTimeZone());
}

std::string Elapsed(const proto::Job& job) {
  if (job.started_unix_ms() == 0) return "-";
  const int64_t end = job.finished_unix_ms() != 0 ? job.finished_unix_ms() : absl::ToUnixMillis(absl::Now());
  return absl::StrFormat("%.1fs", (end - job.started_unix_ms()) / 1000.0);
}

std::string FirstLine(const std::string& text, size_t width) {
  std::string line = text.substr(0, text.find('\n'));
  if (line.size() > width) line = line.substr(0, width - 3) + "...";
  return line;
}

nlohmann::json JobJson(const proto::Job& job) {
  nlohmann::json j = {{"id", job.id()},
                      {"name", job.name()},
                      {"state", StateName(job.state())},
                      {"priority", job.priority()},
                      {"slots", job.slots()},
                      {"backend", job.backend()},
                      {"reason", job.reason()},
                      {"cancel_requested", job.cancel_requested()},
                      {"reattached", job.reattached()},
                      {"queue_position", job.queue_position()},
                      {"submitted_unix_ms", job.submitted_unix_ms()},
                      {"started_unix_ms", job.started_unix_ms()},
                      {"finished_unix_ms", job.finished_unix_ms()},
                      {"log_dir", job.log_dir()}};
  j["test_accuracy"] = job.state() == proto::JOB_SUCCEEDED ? nlohmann::json(job.test_accuracy()) : nlohmann::json(nullptr);
  j["result"] = job.result_json().empty() ? nlohmann::json(nullptr)
                                          : nlohmann::json::parse(job.result_json(), nullptr, false);
  nlohmann::json processes = nlohmann::json::array();
  for (const proto::JobProcess& p : job.processes()) {
    processes.push_back({{"role", p.role()}, {"pid", p.pid()}, {"incarnation", p.incarnation()}, {"exit", p.exit()}});
  }
  j["processes"] = processes;
  return j;
}

void PrintTable(const std::vector<proto::Job>& jobs) {
  std::printf("%-5s %-24s %-10s %4s %5s %-19s %8s  %s\n", "ID", "NAME", "STATE", "PRIO", "SLOTS", "SUBMITTED",
              "ELAPSED", "NOTE");
  for (const proto::Job& job : jobs) {
    std::string note = job.reason();
    if (job.state() == proto::JOB_QUEUED) {
      note = absl::StrCat("queue position ", job.queue_position(), job.reason().empty() ? "" : ": ", job.reason());
    }
    if (job.state() == proto::JOB_SUCCEEDED) note = absl::StrFormat("test accuracy %.4f", job.test_accuracy());
    if (job.cancel_requested() && job.state() == proto::JOB_RUNNING) note = "cancelling";
    std::printf("%-5lld %-24s %-10s %4d %5d %-19s %8s  %s\n", static_cast<long long>(job.id()),
                FirstLine(job.name(), 24).c_str(), StateName(job.state()).c_str(), job.priority(), job.slots(),
                Time(job.submitted_unix_ms()).c_str(), Elapsed(job).c_str(), FirstLine(note, 70).c_str());
  }
}

void PrintJob(const proto::Job& job) {
  std::printf("job %lld: %s\n", static_cast<long long>(job.id()), job.name().c_str());
  std::printf("  state      %s%s\n", StateName(job.state()).c_str(),
              job.cancel_requested() && job.state() == proto::JOB_RUNNING ? " (cancelling)" : "");
  if (job.state() == proto::JOB_QUEUED) std::printf("  queue      position %d\n", job.queue_position());
  if (!job.reason().empty()) {
    std::string reason = job.reason();
    for (size_t at = reason.find('\n'); at != std::string::npos; at = reason.find('\n', at + 1)) {
      reason.replace(at, 1, "\n             ");
    }
    std::printf("  reason     %s\n", reason.c_str());
  }
  std::printf("  priority   %d\n  slots      %d\n  backend    %s\n", job.priority(), job.slots(), job.backend().c_str());
  std::printf("  submitted  %s\n  started    %s\n  finished   %s\n  elapsed    %s\n", Time(job.submitted_unix_ms()).c_str(),
              Time(job.started_unix_ms()).c_str(), Time(job.finished_unix_ms()).c_str(), Elapsed(job).c_str());
  if (job.state() == proto::JOB_SUCCEEDED) std::printf("  accuracy   %.4f\n", job.test_accuracy());
  if (!job.log_dir().empty()) std::printf("  logs       %s\n", job.log_dir().c_str());
  if (job.processes_size() > 0) {
    std::printf("  %-12s %8s %9s  %s\n", "ROLE", "PID", "RESTARTS", "EXIT");
    for (const proto::JobProcess& p : job.processes()) {
      std::printf("  %-12s %8d %9d  %s\n", p.role().c_str(), p.pid(), p.incarnation(),
                  p.exit().empty() ? "(running)" : p.exit().c_str());
    }
  }
}

void AddDaemonCommand(CLI::App& app, Commands& commands) {
  auto o = std::make_shared<scheduler::SchedulerDaemonOptions>();
  auto token_file = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("scheduler", "Run the scheduler daemon: a gRPC JobService that stores, queues and runs jobs");
  cmd->add_option("--listen", o->listen, "host:port for the JobService (port 0: the OS chooses)")->capture_default_str();
  cmd->add_option("--store", o->store_path, "SQLite file holding every job (created if missing)")->required();
  cmd->add_option("--slots", o->slots, "Cores lent to jobs; a job holds servers + learners (0 = the cores this daemon may use, no more than its cgroup's CPU quota)")
      ->capture_default_str();
  cmd->add_option("--memory", o->memory_bytes,
                  "Memory lent to local jobs, such as 16GiB: a running local job holds its estimate and later ones "
                  "wait for room (default: this machine's MemTotal)")
      ->transform(CLI::AsSizeValue(false));
  cmd->add_option("--token-file", *token_file, "File holding the bearer token clients must send (default: $ORRERY_SCHEDULER_TOKEN)");
  cmd->add_option("--metrics-listen", o->metrics_listen, "host:port serving Prometheus /metrics (default: none)");
  cmd->add_option("--log-root", o->log_root, "Per-job process logs (default: <store dir>/<store name>-logs)");
  cmd->add_option("--tls-cert", o->tls.cert, "PEM certificate the JobService presents (with --tls-key: TLS)");
  cmd->add_option("--tls-key", o->tls.key, "PEM private key of --tls-cert");
  cmd->add_option("--tls-client-ca", o->tls.ca, "PEM CA that must have signed every client's certificate (mutual TLS)");
  cmd->add_option("--mpirun-arg", o->mpirun_args, "Extra argument for mpirun in backend: mpi jobs (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--sbatch-arg", o->sbatch_args, "Extra argument for sbatch in backend: slurm jobs (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--slurm-work-dir", o->slurm_work_dir,
                  "Batch scripts and task output of slurm jobs, seen by every node (default: <store dir>/<store name>-slurm)");
  cmd->callback([&commands, o, token_file] {
    commands.Set([o, token_file] {
      absl::StatusOr<std::string> token = ReadToken(*token_file);
      if (!token.ok()) return Complain("scheduler", kExitUsage, std::string(token.status().message()));
      o->token = *token;
      o->orrery_binary = SelfPath();
      absl::Status st = scheduler::RunSchedulerDaemon(*o);
      if (!st.ok()) {
        return Complain("scheduler", st.code() == absl::StatusCode::kInvalidArgument ? kExitUsage : kExitFailed,
                        std::string(st.message()));
      }
      return 0;
    });
  });
}

void AddSubmitCommand(CLI::App& app, Commands& commands) {
  auto flags = std::make_shared<ClientFlags>();
  auto path = std::make_shared<std::string>();
  auto priority = std::make_shared<int>(0);
  auto backend = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("submit", "Submit a job spec to the scheduler; prints the job's id");
  cmd->add_option("job", *path, "Job spec YAML (see examples/jobs/)")->required();
  cmd->add_option("--priority", *priority, "Higher runs first; FIFO among equal priorities")->capture_default_str();
  cmd->add_option("--backend", *backend, "Run it with this backend instead of the spec's: local, mpi or slurm")
      ->check(CLI::IsMember({"local", "mpi", "slurm", "kubernetes"}));
  AddClientFlags(cmd, *flags);
  cmd->callback([&commands, flags, path, priority, backend] {
    commands.Set([flags, path, priority, backend] {
      absl::StatusOr<std::string> text = scheduler::ReadJobSpecFile(*path);
      if (!text.ok()) return Complain("submit", kExitFailed, std::string(text.status().message()));
      std::unique_ptr<Client> client;
      if (int rc = Client::Connect("submit", *flags, &client); rc != 0) return rc;
      proto::SubmitRequest request;
      request.set_spec_yaml(*text);
      request.set_base_dir(fs::absolute(*path).parent_path().string());
      request.set_priority(*priority);
      request.set_backend(*backend);
      proto::Job job;
      grpc::Status st = client->stub().Submit(client->Context().get(), request, &job);
      if (!st.ok()) {
        if (st.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
          return Complain("submit", kExitFailed, absl::StrCat(*path, ": ", st.error_message()));
        }
        return client->Fail(st);
      }
      if (flags->output == "json") {
        std::printf("%s\n", JobJson(job).dump(2).c_str());
      } else {
        std::printf("job %lld (%s) submitted: %s, %d slot(s)%s\n", static_cast<long long>(job.id()), job.name().c_str(),
                    StateName(job.state()).c_str(), job.slots(),
                    job.queue_position() > 0 ? absl::StrCat(", queue position ", job.queue_position()).c_str() : "");
      }
      return 0;
    });
  });
}

// `list`, and `status` without a job.
int ListJobs(const std::string& command, const ClientFlags& flags, const std::vector<std::string>& states) {
  std::unique_ptr<Client> client;
  if (int rc = Client::Connect(command, flags, &client); rc != 0) return rc;
  proto::ListRequest request;
  for (const std::string& s : states) {
    std::optional<scheduler::JobState> state = scheduler::ParseJobState(s);
    if (!state) return Complain(command, kExitUsage, absl::StrCat("--state: unknown state '", s, "'"));
    request.add_states(scheduler::JobStateToProto(*state));
  }
  proto::ListResponse response;
  grpc::Status st = client->stub().List(client->Context().get(), request, &response);
  if (!st.ok()) return client->Fail(st);
  std::vector<proto::Job> jobs(response.jobs().begin(), response.jobs().end());
  if (flags.output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const proto::Job& job : jobs) out.push_back(JobJson(job));
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    PrintTable(jobs);
  }
  return 0;
}

void AddListCommand(CLI::App& app, Commands& commands) {
  auto flags = std::make_shared<ClientFlags>();
  auto states = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = app.add_subcommand("list", "List the scheduler's jobs");
  cmd->add_option("--state", *states, "Only jobs in these states (queued, running, succeeded, failed, cancelled, lost)");
  AddClientFlags(cmd, *flags);
  cmd->callback([&commands, flags, states] {
    commands.Set([flags, states] { return ListJobs("list", *flags, *states); });
  });
}

void AddStatusCommand(CLI::App& app, Commands& commands) {
  auto flags = std::make_shared<ClientFlags>();
  auto job_name = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("status", "Show one job (by id or name) in detail, or every job");
  cmd->add_option("job", *job_name, "Job id or name (default: every job)");
  AddClientFlags(cmd, *flags);
  cmd->callback([&commands, flags, job_name] {
    commands.Set([flags, job_name] {
      if (job_name->empty()) return ListJobs("status", *flags, {});
      std::unique_ptr<Client> client;
      if (int rc = Client::Connect("status", *flags, &client); rc != 0) return rc;
      proto::GetRequest request;
      request.set_job(*job_name);
      proto::Job job;
      grpc::Status st = client->stub().Get(client->Context().get(), request, &job);
      if (!st.ok()) return client->Fail(st);
      if (flags->output == "json") {
        nlohmann::json j = JobJson(job);
        j["spec_yaml"] = job.spec_yaml();
        std::printf("%s\n", j.dump(2).c_str());
      } else {
        PrintJob(job);
      }
      return 0;
    });
  });
}

void AddCancelCommand(CLI::App& app, Commands& commands) {
  auto flags = std::make_shared<ClientFlags>();
  auto job_name = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("cancel", "Cancel a queued job, or stop a running job's processes");
  cmd->add_option("job", *job_name, "Job id or name")->required();
  AddClientFlags(cmd, *flags);
  cmd->callback([&commands, flags, job_name] {
    commands.Set([flags, job_name] {
      std::unique_ptr<Client> client;
      if (int rc = Client::Connect("cancel", *flags, &client); rc != 0) return rc;
      proto::CancelRequest request;
      request.set_job(*job_name);
      proto::Job job;
      grpc::Status st = client->stub().Cancel(client->Context().get(), request, &job);
      if (!st.ok()) return client->Fail(st);
      if (flags->output == "json") {
        std::printf("%s\n", JobJson(job).dump(2).c_str());
      } else {
        std::printf("job %lld (%s): %s\n", static_cast<long long>(job.id()), job.name().c_str(),
                    job.state() == proto::JOB_RUNNING ? "cancelling: its processes are stopping"
                                                      : StateName(job.state()).c_str());
      }
      return 0;
    });
  });
}

void AddLogsCommand(CLI::App& app, Commands& commands) {
  auto flags = std::make_shared<ClientFlags>();
  auto job_name = std::make_shared<std::string>();
  auto follow = std::make_shared<bool>(false);
  auto tail = std::make_shared<int>(0);
  CLI::App* cmd = app.add_subcommand("logs", "Print a job's process logs, merged in time order");
  cmd->add_option("job", *job_name, "Job id or name")->required();
  cmd->add_flag("--follow,-f", *follow, "Keep printing new lines until the job ends");
  cmd->add_option("--tail", *tail, "Only the last N stored lines first (0 = all)")->capture_default_str();
  AddClientFlags(cmd, *flags);
  cmd->callback([&commands, flags, job_name, follow, tail] {
    commands.Set([flags, job_name, follow, tail] {
      std::unique_ptr<Client> client;
      if (int rc = Client::Connect("logs", *flags, &client); rc != 0) return rc;
      proto::LogsRequest request;
      request.set_job(*job_name);
      request.set_follow(*follow);
      request.set_tail(*tail);
      std::unique_ptr<grpc::ClientContext> context = client->Context(/*streaming=*/*follow);
      std::unique_ptr<grpc::ClientReader<proto::LogLine>> reader = client->stub().Logs(context.get(), request);
      proto::LogLine line;
      while (reader->Read(&line)) {
        if (flags->output == "json") {
          std::printf("%s\n", nlohmann::json({{"line", line.line()}}).dump().c_str());
        } else {
          std::printf("%s\n", line.line().c_str());
        }
        std::fflush(stdout);
      }
      grpc::Status st = reader->Finish();
      if (!st.ok()) return client->Fail(st);
      return 0;
    });
  });
}

}  // namespace

void AddSchedulerCommands(CLI::App& app, Commands& commands) {
  AddDaemonCommand(app, commands);
  AddSubmitCommand(app, commands);
  AddStatusCommand(app, commands);
  AddLogsCommand(app, commands);
  AddCancelCommand(app, commands);
  AddListCommand(app, commands);
}

}  // namespace orrery::cli
