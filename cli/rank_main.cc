#include "cli/rank_main.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_join.h"
#include "base/cpu_quota.h"
#include "base/random_token.h"
#include "cli/commands.h"
#include "nlohmann/json.hpp"
#include "scheduler/backends/job_ranks.h"
#include "scheduler/job_report.h"
#include "scheduler/job_spec.h"
#include "scheduler/run_job.h"
#include "server/shard_server.h"

namespace orrery::cli {
namespace {

using scheduler::RankKind;
using scheduler::RankRole;
using scheduler::Rendezvous;

constexpr int kDone = 1;      // barrier: every learner has finished
constexpr int kFinished = 2;  // barrier: the evaluator has made its final evaluation
constexpr absl::Duration kPoll = absl::Milliseconds(200);

void Emit(const char* tag, const nlohmann::json& body) {
  std::printf("%s %s\n", tag, body.dump().c_str());
  std::fflush(stdout);
}

void Error(const RankRole& role, const std::string& message) {
  std::fprintf(stderr, "orrery rank (%s): %s\n", role.name.c_str(), message.c_str());
  std::fflush(stderr);
}

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// Waits up to `d` for SIGINT/SIGTERM (blocked in every thread); returns the signal or 0.
int WaitSignal(absl::Duration d) {
  sigset_t set = StopSignals();
  timespec ts = absl::ToTimespec(d);
  const int sig = sigtimedwait(&set, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

// The launcher (mpirun, orted, slurmstepd) is our parent; if it dies we are orphaned and nobody
// would ever stop us.
void WatchParent() {
  const pid_t parent = ::getppid();
  std::thread([parent] {
    for (;;) {
      absl::SleepFor(absl::Seconds(1));
      if (::getppid() != parent) {
        std::fprintf(stderr, "orrery rank: the launcher (pid %d) exited; stopping\n", static_cast<int>(parent));
        std::fflush(stderr);
        ::_exit(1);
      }
    }
  }).detach();
}

// The ServerOptions `orrery server ARGV...` would run with. Every flag ServerArgv emits must be
// known here, so that a rank shard and a local shard of the same job are configured alike.
absl::StatusOr<server::ServerOptions> ServerOptionsFromArgv(const std::vector<std::string>& argv) {
  server::ServerOptions o;
  for (size_t i = 2; i < argv.size(); i += 2) {
    const std::string& flag = argv[i];
    if (flag == "--resume") {  // the one flag without a value
      o.resume = true;
      --i;
      continue;
    }
    if (i + 1 >= argv.size()) return absl::InvalidArgumentError(absl::StrCat(flag, ": missing value"));
    const std::string& v = argv[i + 1];
    bool ok = true;
    if (flag == "--listen") {
      o.listen_address = v;
    } else if (flag == "--shard") {
      ok = absl::SimpleAtoi(v, &o.shard_index);
    } else if (flag == "--shards") {
      ok = absl::SimpleAtoi(v, &o.num_shards);
    } else if (flag == "--job") {
      o.job_id = v;
    } else if (flag == "--token") {
      o.token = v;
    } else if (flag == "--layout") {
      o.layout_path = v;
    } else if (flag == "--init-weights") {
      o.initial_weights_path = v;
    } else if (flag == "--protocol") {
      o.protocol = v;
    } else if (flag == "--learners") {
      ok = absl::SimpleAtoi(v, &o.learners);
    } else if (flag == "--lr") {
      ok = absl::SimpleAtof(v, &o.lr);
    } else if (flag == "--staleness-rule") {
      o.staleness_rule = v;
    } else if (flag == "--momentum") {
      ok = absl::SimpleAtof(v, &o.momentum);
    } else if (flag == "--lr-decay-at-samples") {
      o.lr_decay_at_samples.clear();
      for (absl::string_view at : absl::StrSplit(v, ',')) {
        uint64_t samples = 0;
        ok = ok && absl::SimpleAtoi(at, &samples);
        o.lr_decay_at_samples.push_back(samples);
      }
    } else if (flag == "--lr-decay-factor") {
      ok = absl::SimpleAtof(v, &o.lr_decay_factor);
    } else if (flag == "--learner-timeout") {
      ok = absl::SimpleAtod(v, &o.learner_timeout_seconds);
    } else if (flag == "--weights") {
      o.weights = v;
    } else if (flag == "--weights-fl") {
      ok = absl::SimpleAtoi(v, &o.weights_fl);
    } else if (flag == "--weights-rounding") {
      o.weights_rounding = v;
    } else if (flag == "--max-message-bytes") {
      ok = absl::SimpleAtoi(v, &o.max_message_bytes);
    } else if (flag == "--checkpoint-dir") {
      o.checkpoint_dir = v;
    } else if (flag == "--checkpoint-every") {
      ok = absl::SimpleAtod(v, &o.checkpoint_every_seconds);
    } else if (flag == "--tls-cert") {
      o.tls_cert = v;
    } else if (flag == "--tls-key") {
      o.tls_key = v;
    } else if (flag == "--tls-client-ca") {
      o.tls_client_ca = v;
    } else if (flag == "--metrics-listen") {
      o.metrics_listen = v;
    } else {
      return absl::UnimplementedError(absl::StrCat("server flag ", flag, " is not supported in a rank yet"));
    }
    if (!ok) return absl::InvalidArgumentError(absl::StrCat(flag, ": bad value '", v, "'"));
  }
  return o;
}

// Runs `orrery ARGV...` (learner or evaluator) in this process through the CLI's own parser.
int RunCommandLine(const std::vector<std::string>& argv) {
  CLI::App app;
  Commands commands;
  AddDistributedCommands(app, commands);
  std::vector<std::string> copy = argv;
  std::vector<char*> ptrs;
  for (std::string& a : copy) ptrs.push_back(a.data());
  try {
    app.parse(static_cast<int>(ptrs.size()), ptrs.data());
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "orrery rank: bad role command line: %s\n", e.what());
    return 2;
  }
  return commands.Run();
}

class RankRun {
 public:
  RankRun(const RankOptions& options, Rendezvous& rv) : options_(options), rv_(rv) {}
  RankResult Run();

 private:
  RankResult Finish(int code, bool finalize) {
    Emit("ORRERY_RANK_EXIT", {{"rank", rv_.rank()}, {"role", role_.name}, {"code", code}});
    return RankResult{code, finalize};
  }
  // Reports `message`, tells every rank the job failed, and returns the result to exit with.
  RankResult Abort(int code, const std::string& message) {
    Error(role_, message);
    Emit("ORRERY_RANK_EXIT", {{"rank", rv_.rank()}, {"role", role_.name}, {"code", code}});
    rv_.Abort(code, absl::StrCat(role_.name, ": ", message));
    return RankResult{code, false};
  }
  // Waits for barrier `phase` (already entered). Returns 0 when it completed, 128 + signal when
  // a stop signal came first, 1 when the job was aborted.
  int AwaitBarrier(int phase);
  RankResult RunServer();
  RankResult RunLearner();
  // `argv` with --events-file for this role when options_.events_dir is usable here.
  std::vector<std::string> WithEvents(std::vector<std::string> argv) const;
  RankResult RunEvaluator();
  RankResult AfterRole(int role_code);

  const RankOptions& options_;
  Rendezvous& rv_;
  scheduler::JobSpec job_;
  RankRole role_;
  std::vector<std::string> hosts_;
  std::string host_;
  std::string bind_, advertise_;
  std::string token_;
  std::vector<std::string> servers_;
  std::unique_ptr<server::ShardServer> shard_;
};

int RankRun::AwaitBarrier(int phase) {
  for (;;) {
    absl::StatusOr<bool> done = rv_.Test(phase);
    if (!done.ok()) {
      Error(role_, std::string(done.status().message()));
      return 1;
    }
    if (*done) return 0;
    if (int sig = WaitSignal(kPoll); sig != 0) {
      Error(role_, absl::StrCat("stopped by signal ", sig, " before the job ended"));
      return 128 + sig;
    }
  }
}

RankResult RankRun::Run() {
  role_.name = absl::StrCat("rank-", rv_.rank());
  WatchParent();
  absl::StatusOr<scheduler::JobSpec> job = scheduler::LoadJobSpec(options_.job_path);
  if (!job.ok()) return Abort(2, std::string(job.status().message()));
  job_ = *std::move(job);
  const int needed = scheduler::JobRankCount(job_);
  if (rv_.size() != needed) {
    return Abort(2, absl::StrCat("job ", job_.name, " needs ", needed, " ranks (", job_.servers, " server(s), ",
                                 job_.learners, " learner(s), 1 evaluator); the launcher started ", rv_.size()));
  }
  role_ = scheduler::RoleOfRank(job_, rv_.rank());
  char name[256] = {};
  ::gethostname(name, sizeof(name) - 1);
  host_ = name;
  Emit("ORRERY_RANK", {{"rank", rv_.rank()}, {"size", rv_.size()}, {"role", role_.name},
                       {"pid", static_cast<int>(::getpid())}, {"host", host_}});

  absl::StatusOr<std::vector<std::string>> hosts = rv_.AllGather(host_, options_.start_timeout);
  if (!hosts.ok()) return Abort(1, std::string(hosts.status().message()));
  hosts_ = *hosts;
  bool one_host = true;
  for (const std::string& h : hosts_) one_host = one_host && h == host_;
  bind_ = !options_.host.empty() ? options_.host : one_host ? "127.0.0.1" : "0.0.0.0";
  advertise_ = !options_.host.empty() ? options_.host : one_host ? "127.0.0.1" : host_;

  // Launchers pass the job token in ORRERY_TOKEN; when they did not, rank 0 makes one.
  const char* env_token = std::getenv("ORRERY_TOKEN");
  token_ = env_token != nullptr ? env_token : "";
  std::string offer = rv_.rank() == 0 && token_.empty() ? RandomToken() : "";
  absl::StatusOr<std::vector<std::string>> tokens = rv_.AllGather(offer, options_.start_timeout);
  if (!tokens.ok()) return Abort(1, std::string(tokens.status().message()));
  if (!(*tokens)[0].empty()) token_ = (*tokens)[0];
  ::setenv("ORRERY_TOKEN", token_.c_str(), 1);

  std::string endpoint;
  if (role_.kind == RankKind::kServer) {
    std::vector<std::string> argv =
        scheduler::ServerArgv(job_, "orrery", role_.index, absl::StrCat(bind_, ":0"));
    absl::StatusOr<server::ServerOptions> o = ServerOptionsFromArgv(argv);
    absl::StatusOr<std::unique_ptr<server::ShardServer>> started =
        o.ok() ? [&] { o->token = token_; return server::ShardServer::Start(*o); }() : o.status();
    if (started.ok()) {
      shard_ = *std::move(started);
      const std::string& bound = shard_->address();
      endpoint = absl::StrCat(advertise_, ":", bound.substr(bound.rfind(':') + 1));
      if (!shard_->metrics_address().empty()) std::printf("ORRERY_SERVER_METRICS %s\n", shard_->metrics_address().c_str());
      std::printf("ORRERY_SERVER_READY %s\n", endpoint.c_str());
      std::fflush(stdout);
    } else {
      endpoint = absl::StrCat("!", started.status().message());
    }
  }
  absl::StatusOr<std::vector<std::string>> endpoints = rv_.AllGather(endpoint, options_.start_timeout);
  if (!endpoints.ok()) return Abort(1, std::string(endpoints.status().message()));
  for (int s = 0; s < job_.servers; ++s) {
    const std::string& e = (*endpoints)[s];
    if (e.empty() || e[0] == '!') {
      return Abort(1, absl::StrCat("server-", s, " could not start: ", e.empty() ? "no endpoint" : e.substr(1)));
    }
    servers_.push_back(e);
  }

  switch (role_.kind) {
    case RankKind::kServer: return RunServer();
    case RankKind::kLearner: return RunLearner();
    case RankKind::kEvaluator: return RunEvaluator();
  }
  return Finish(1, false);
}

RankResult RankRun::RunServer() {
  // A shard has nothing to wait for: it enters both barriers now and serves until the second
  // completes.
  absl::Status st = rv_.Arrive(kDone);
  if (st.ok()) st = rv_.Arrive(kFinished);
  if (!st.ok()) {
    shard_->Shutdown();
    return Abort(1, std::string(st.message()));
  }
  const int code = AwaitBarrier(kFinished);
  shard_->Shutdown();
  return Finish(code, code == 0);
}

std::vector<std::string> RankRun::WithEvents(std::vector<std::string> argv) const {
  if (options_.events_dir.empty()) return argv;
  // On a node that does not share the directory the role runs without the file: it only helps a
  // restarted scheduler, and must not keep the rank from training.
  if (::access(options_.events_dir.c_str(), W_OK) != 0) {
    Error(role_, absl::StrCat("--events-dir ", options_.events_dir, " is not writable here (", std::strerror(errno),
                              "); the ", role_.name, " writes no events file"));
    return argv;
  }
  return scheduler::WithEventsFile(std::move(argv), options_.events_dir, role_.name);
}

RankResult RankRun::RunLearner() {
  int learners_here = 0;
  for (int r = job_.servers; r < job_.servers + job_.learners; ++r) learners_here += hosts_[r] == host_;
  // The learners of this host share the cores this rank may keep busy (mpirun's or srun's binding,
  // and its cgroup's CPU quota).
  const int threads = options_.threads > 0 ? options_.threads : std::max(1, UsableCpuCount() / std::max(1, learners_here));
  // A learner has no signal handling of its own: SIGTERM ends it at once, as in a local run.
  sigset_t stop = StopSignals();
  pthread_sigmask(SIG_UNBLOCK, &stop, nullptr);
  const int code = RunCommandLine(WithEvents(scheduler::LearnerArgv(job_, "orrery", role_.index, servers_, threads)));
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  if (code != 0) Error(role_, absl::StrCat("the learner failed (exit code ", code, "); the job goes on without it"));
  absl::Status st = rv_.Arrive(kDone);
  if (st.ok()) st = rv_.Arrive(kFinished);
  if (!st.ok()) return Abort(1, std::string(st.message()));
  return AfterRole(code);
}

RankResult RankRun::RunEvaluator() {
  absl::Status arrived = rv_.Arrive(kDone);
  if (!arrived.ok()) return Abort(1, std::string(arrived.message()));
  // A helper thread watches the first barrier and, once every learner has finished, asks the
  // evaluator (blocked in sigtimedwait between evaluations) for its final evaluation.
  std::atomic<bool> quit{false}, asked{false};
  std::thread watcher([this, &quit, &asked] {
    while (!quit.load()) {
      absl::StatusOr<bool> done = rv_.Test(kDone);
      if (!done.ok() || *done) {
        asked.store(true);
        ::kill(::getpid(), SIGTERM);
        return;
      }
      absl::SleepFor(kPoll);
    }
  });
  const int code = RunCommandLine(WithEvents(scheduler::EvaluatorArgv(job_, "orrery", servers_, 1)));
  quit.store(true);
  watcher.join();
  if (asked.load()) {  // the watcher's SIGTERM may still be pending if the evaluator failed first
    sigset_t stop = StopSignals();
    timespec zero{0, 0};
    while (sigtimedwait(&stop, nullptr, &zero) > 0) {
    }
  }
  if (code != 0) Error(role_, absl::StrCat("the evaluator failed (exit code ", code, ")"));
  const int waited = AwaitBarrier(kDone);
  if (waited != 0) return Finish(waited, false);
  absl::Status st = rv_.Arrive(kFinished);
  if (!st.ok()) return Abort(1, std::string(st.message()));
  return AfterRole(code);
}

RankResult RankRun::AfterRole(int role_code) {
  const int waited = AwaitBarrier(kFinished);
  if (waited != 0) return Finish(waited, false);
  return Finish(role_code, true);
}

}  // namespace

RankResult RunRank(const RankOptions& options, scheduler::Rendezvous& rendezvous) {
  RankRun run(options, rendezvous);
  return run.Run();
}

}  // namespace orrery::cli
