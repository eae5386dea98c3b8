#include "scheduler/run_job.h"

#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/cpu_affinity.h"
#include "base/cpu_quota.h"
#include "base/file_lock.h"
#include "base/proc_stat.h"
#include "base/progress_line.h"
#include "base/random_token.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "parameter_server.grpc.pb.h"
#include "learner/model_graph.h"
#include "learner/model_spec.h"
#include "server/tls.h"
#include "scheduler/backends/local_backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/job_report.h"
#include "scheduler/line_waiter.h"
#include "scheduler/liveness.h"

namespace orrery::scheduler {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string Num(double v) { return absl::StrFormat("%.10g", v); }

// What a client of the job's shards presents: their CA, and with mutual TLS the certificate.
server::TlsFiles ClientTls(const JobSpec& job) {
  if (!job.tls) return {};
  return {job.tls->ca, job.tls->mutual ? job.tls->cert : "", job.tls->mutual ? job.tls->key : ""};
}

double SlowFactor(const JobSpec& job, int index) {
  for (const SlowLearner& s : job.slow_learners) {
    if (s.learner == index) return s.factor;
  }
  return 1;
}

}  // namespace

// The state of one run, driven by backend events on the loop thread.
class JobRun::Impl {
 public:
  Impl(JobSpec job, RunJobOptions options, EventLoop& loop, Backend& backend)
      : job_(std::move(job)), options_(std::move(options)), loop_(loop), backend_(backend),
        waiter_(loop, backend), token_(RandomToken()) {}
  ~Impl();

  void Start(Done done);
  void Cancel(absl::Status why, absl::Duration grace);
  bool finished() const { return finished_; }
  std::vector<ProcessId> processes() const { return std::vector<ProcessId>(own_.begin(), own_.end()); }

 private:
  ProcessSpec Spec(const std::string& role, std::vector<std::string> argv) const;
  absl::StatusOr<std::vector<ProcessId>> StartGroup(const std::vector<ProcessSpec>& specs);
  void StartServers();
  void OnServerReady(size_t shard, absl::StatusOr<LineMatch> match);
  absl::Status StartLearners();
  void OnLine(const OutputLine& line);
  void OnExit(const ProcessExit& exit);
  void OnEval(const nlohmann::json& body);
  void Fail(absl::Status status, absl::Duration grace = absl::Seconds(5));
  void StopEverything(absl::Duration grace);
  void MaybeFinish();
  void Finish();
  void ShowProgress();
  void EvictLearner(const std::string& role, int learner_id);
  int LearnerThreads() const;
  // `argv` with --cpus for the job's `process`-th process (RunJobOptions::cpus), or as it is.
  std::vector<std::string> Bound(std::vector<std::string> argv, int process) const;

  const JobSpec job_;
  const RunJobOptions options_;
  EventLoop& loop_;
  Backend& backend_;
  LineWaiter waiter_;
  std::string token_;
  ProgressLine progress_;
  Done done_;
  ListenerId line_listener_ = 0;
  ListenerId exit_listener_ = 0;
  TimerId timeout_timer_ = 0;
  TimerId ticker_ = 0;
  TimerId health_timer_ = 0;
  // The runner's own channel to each shard (health checks, and leaving on a dead learner's
  // behalf), opened once the shards are ready.
  std::vector<std::unique_ptr<proto::ParameterServer::Stub>> shard_stubs_;
  // Health checks of the shards (a Stats call each): last answer, a check in flight.
  std::vector<absl::Time> shard_answered_;
  std::vector<bool> probing_;
  // Checks in flight, so that the destructor can cancel them and wait: their callbacks post to
  // the loop, which may not outlive this run by much.
  struct Probes {
    absl::Mutex mu;
    std::set<grpc::ClientContext*> live ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<Probes> probes_ = std::make_shared<Probes>();
  void StartHealthChecks();
  void CheckShards();
  // Held from the start to the end: one run at a time writes the log directory's files.
  std::optional<FileLock> log_dir_lock_;
  absl::Status LockLogDir();
  std::set<ProcessId> own_;        // every process of this job in the shared backend
  std::vector<WaitId> ready_waits_;
  Liveness liveness_;

  Clock::time_point start_ = Clock::now();
  Clock::time_point learners_start_;
  std::optional<Clock::time_point> learners_end_;
  std::vector<ProcessId> server_ids_;
  std::vector<std::string> endpoints_;
  size_t servers_pending_ = 0;
  std::map<ProcessId, int> learner_index_;  // learner process -> index
  std::map<int, nlohmann::json> learner_progress_;
  std::map<ProcessId, int> learner_id_;     // learner process -> id the shards gave it
  std::map<std::pair<int, int>, uint64_t> lost_per_restart_;  // (shard, incarnation) -> updates lost
  ProcessId evaluator_ = -1;
  int learners_exited_ = 0;
  bool evaluator_asked_to_stop_ = false;
  bool stopping_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  absl::Status failure_;
  std::optional<nlohmann::json> last_eval_;
  bool final_eval_seen_ = false;
  RunReport report_;
};

JobRun::Impl::~Impl() {
  liveness_.Close();
  backend_.RemoveListener(line_listener_);
  backend_.RemoveListener(exit_listener_);
  if (timeout_timer_) loop_.Cancel(timeout_timer_);
  if (ticker_) loop_.Cancel(ticker_);
  if (health_timer_) loop_.Cancel(health_timer_);
  absl::MutexLock lock(&probes_->mu);
  for (grpc::ClientContext* c : probes_->live) c->TryCancel();
  probes_->mu.Await(absl::Condition(
      +[](std::set<grpc::ClientContext*>* p) { return p->empty(); }, &probes_->live));
}

ProcessSpec JobRun::Impl::Spec(const std::string& role, std::vector<std::string> argv) const {
  ProcessSpec spec;
  spec.role = options_.role_prefix + role;
  spec.argv = std::move(argv);
  spec.env["ORRERY_TOKEN"] = token_;
  // Several compute processes share the cores: OpenMP threads must sleep, not spin, when idle.
  spec.env["OMP_WAIT_POLICY"] = "passive";
  if (!options_.log_dir.empty()) spec.log_path = absl::StrCat(options_.log_dir, "/", role, ".log");
  return spec;
}

std::vector<std::string> JobRun::Impl::Bound(std::vector<std::string> argv, int process) const {
  if (options_.cpus.empty()) return argv;
  const int cpu = options_.cpus[static_cast<size_t>(process) % options_.cpus.size()];
  argv.insert(argv.end(), {"--cpus", absl::StrCat(cpu)});
  return argv;
}

int JobRun::Impl::LearnerThreads() const {
  if (options_.threads_per_learner > 0) return options_.threads_per_learner;
  if (!options_.cpus.empty()) return 0;  // one per bound core: the learner's one
  // The learners share the cores this process may keep busy (its children inherit its affinity
  // and its cgroup's CPU quota).
  return std::max(1, UsableCpuCount() / job_.learners);
}

// Backend::StartGroup, remembering every process it started as this job's, including those it
// had started (and is now killing) when it failed, so that the run ends only after they exit.
absl::StatusOr<std::vector<ProcessId>> JobRun::Impl::StartGroup(const std::vector<ProcessSpec>& specs) {
  absl::StatusOr<std::vector<ProcessId>> ids = backend_.StartGroup(specs);
  if (!ids.ok()) {
    for (const ProcessSpec& spec : specs) {
      if (std::optional<ProcessId> id = backend_.Find(spec.role)) own_.insert(*id);
    }
    return ids.status();
  }
  own_.insert(ids->begin(), ids->end());
  if (options_.on_started) options_.on_started(*ids, backend_);
  return ids;
}

void JobRun::Impl::StartServers() {
  std::vector<ProcessSpec> specs;
  for (int s = 0; s < job_.servers; ++s) {
    ProcessSpec spec = Spec(absl::StrCat("server-", s),
                            Bound(ServerArgv(job_, options_.orrery_binary, s,
                                             absl::StrCat(options_.host, ":0"), options_.resume),
                                  s));
    // Without a checkpoint a restarted shard would come back empty: the job fails instead.
    if (job_.checkpoint) spec.restart = job_.restart;
    specs.push_back(std::move(spec));
  }
  absl::StatusOr<std::vector<ProcessId>> ids = StartGroup(specs);
  if (!ids.ok()) return Fail(ids.status());
  server_ids_ = *ids;
  endpoints_.assign(server_ids_.size(), "");
  servers_pending_ = server_ids_.size();
  // Lines are delivered by later loop turns, so none printed after the start can be missed.
  for (size_t s = 0; s < server_ids_.size(); ++s) {
    absl::StatusOr<WaitId> wait = waiter_.Expect(
        server_ids_[s], R"(^ORRERY_SERVER_READY (\S+))", options_.start_timeout,
        [this, s](absl::StatusOr<LineMatch> match) { OnServerReady(s, std::move(match)); });
    if (!wait.ok()) return Fail(wait.status());
    ready_waits_.push_back(*wait);
  }
}

void JobRun::Impl::OnServerReady(size_t shard, absl::StatusOr<LineMatch> match) {
  if (stopping_) return;
  if (!match.ok()) return Fail(match.status());
  endpoints_[shard] = match->groups[1];
  // A restarted shard comes back at the address the learners already know.
  absl::Status st = backend_.SetRestartArgv(
      server_ids_[shard], Bound(ServerArgv(job_, options_.orrery_binary, static_cast<int>(shard),
                                           endpoints_[shard], /*resume=*/true),
                                static_cast<int>(shard)));
  if (!st.ok()) return Fail(st);
  if (--servers_pending_ > 0) return;
  ready_waits_.clear();
  StartHealthChecks();
  if (options_.progress) {
    progress_.Print(absl::StrFormat("%s: %d shard(s) at %s; starting %d learner(s), protocol %s, lr %g (%s)%s",
                                    job_.name, job_.servers, absl::StrJoin(endpoints_, ", "),
                                    job_.learners, ProtocolToString(job_.protocol), job_.lr.base,
                                    LrStalenessName(job_.lr.staleness),
                                    options_.log_dir.empty() ? "" : absl::StrCat("; logs in ", options_.log_dir)));
  }
  st = StartLearners();
  if (!st.ok()) Fail(st);
}

absl::Status JobRun::Impl::StartLearners() {
  const int threads = LearnerThreads();
  std::vector<ProcessSpec> specs;
  // Their tagged lines also go to files of their own, which outlive a crashed scheduler.
  for (int i = 0; i < job_.learners; ++i) {
    const std::string role = absl::StrCat("learner-", i);
    ProcessSpec spec = Spec(role, WithEventsFile(Bound(LearnerArgv(job_, options_.orrery_binary, i, endpoints_, threads),
                                                       job_.servers + i),
                                                 options_.log_dir, role));
    spec.restart = job_.restart;
    specs.push_back(std::move(spec));
  }
  // The evaluator holds nothing of the model: a restarted one evaluates the shards' weights as
  // they stand (only its evaluation in progress is lost).
  ProcessSpec evaluator = Spec("evaluator", WithEventsFile(Bound(EvaluatorArgv(job_, options_.orrery_binary, endpoints_, 1),
                                                                 job_.servers + job_.learners),
                                                           options_.log_dir, "evaluator"));
  evaluator.restart = job_.restart;
  specs.push_back(std::move(evaluator));
  learners_start_ = Clock::now();
  ASSIGN_OR_RETURN(std::vector<ProcessId> ids, StartGroup(specs));
  for (int i = 0; i < job_.learners; ++i) learner_index_[ids[i]] = i;
  evaluator_ = ids.back();
  return absl::OkStatus();
}

void JobRun::Impl::Fail(absl::Status status, absl::Duration grace) {
  if (failure_.ok()) failure_ = std::move(status);
  StopEverything(grace);
}

void JobRun::Impl::Cancel(absl::Status why, absl::Duration grace) {
  if (finishing_) return;
  if (options_.progress && !stopping_) progress_.Print(absl::StrCat(why.message(), "; stopping every process"));
  Fail(std::move(why), grace);
}

void JobRun::Impl::StopEverything(absl::Duration grace) {
  if (stopping_) return;
  stopping_ = true;
  for (WaitId wait : ready_waits_) waiter_.Cancel(wait);
  ready_waits_.clear();
  for (ProcessId id : own_) {
    // A failed run needs no final evaluation, and the evaluator would retry shards that are
    // stopping too: kill it at once.
    const bool kill_now = id == evaluator_ && !failure_.ok();
    backend_.Stop(id, kill_now ? absl::ZeroDuration() : grace).IgnoreError();
  }
  MaybeFinish();
}

// Once stopping and every process of the job has exited for good, finishes on a later loop turn
// (never inside a backend callback, since `done` may destroy this run).
void JobRun::Impl::MaybeFinish() {
  if (!stopping_ || finishing_) return;
  for (ProcessId id : own_) {
    absl::StatusOr<ProcessInfo> info = backend_.Info(id);
    if (info.ok() && info->state != ProcessState::kExited) return;
  }
  finishing_ = true;
  loop_.Post(liveness_.Guard([this] { Finish(); }));
}

void JobRun::Impl::OnEval(const nlohmann::json& body) {
  const EvalPoint p = ParseEvalPoint(body, SecondsSince(learners_start_));
  const nlohmann::json stats = body.value("stats", nlohmann::json::object());
  report_.evals.push_back(p);
  last_eval_ = body;
  if (job_.target_accuracy && !report_.time_to_target_seconds &&
      p.test_accuracy >= *job_.target_accuracy) {
    report_.time_to_target_seconds = p.seconds;
  }
  const nlohmann::json st = stats.value("staleness", nlohmann::json::object());
  if (options_.progress) {
    progress_.Print(absl::StrFormat(
        "[%6.1fs] test accuracy %.2f%%  loss %.4f  updates %d  staleness mean %.2f max %d%s",
        p.seconds, 100 * p.test_accuracy, p.test_loss, p.updates_applied,
        JsonGet<double>(st, "mean", 0), JsonGet<uint64_t>(st, "max", 0),
        JsonGet<bool>(body, "final", false) ? "  (final)" : ""));
  }
  if (JsonGet<bool>(body, "final", false)) final_eval_seen_ = true;
}

void JobRun::Impl::OnLine(const OutputLine& line) {
  if (options_.on_line) options_.on_line(line, backend_);
  std::string tag;
  nlohmann::json body;
  if (absl::StartsWith(line.text, "ORRERY_SERVER_METRICS ") && options_.progress) {
    progress_.Print(absl::StrCat(line.role.substr(options_.role_prefix.size()), " serves Prometheus metrics at http://",
                                 line.text.substr(22), "/metrics"));
    return;
  }
  if (!ParseTagged(line.text, &tag, &body)) return;
  if (tag == "ORRERY_LEARNER_JOINED" && learner_index_.count(line.id)) {
    learner_id_[line.id] = JsonGet<int>(body, "learner", -1);
  } else if (tag == "ORRERY_EVAL" && line.id == evaluator_) {
    OnEval(body);
  } else if (tag == "ORRERY_LEARNER_SHARD_RESTART" && learner_index_.count(line.id)) {
    // Every learner reports the restart it saw; the largest loss seen counts, once per restart.
    const int shard = JsonGet<int>(body, "shard", -1);
    const uint64_t lost = JsonGet<uint64_t>(body, "updates_lost", 0);
    absl::StatusOr<ProcessInfo> info =
        shard >= 0 && shard < static_cast<int>(server_ids_.size())
            ? backend_.Info(server_ids_[shard])
            : absl::StatusOr<ProcessInfo>(absl::NotFoundError("no such shard"));
    if (info.ok()) {
      // The learner saw the shard come back: the report belongs to its current incarnation.
      uint64_t& worst = lost_per_restart_[{shard, info->incarnation}];
      if (lost > worst) {
        report_.updates_lost += lost - worst;
        worst = lost;
      }
    }
  } else if (tag == "ORRERY_SERVER_RESTORED" && learners_start_ == Clock::time_point{}) {
    // A shard started by --resume (a restart once the learners run is a fault, not a resume).
    report_.samples_at_resume = std::max(report_.samples_at_resume, JsonGet<uint64_t>(body, "samples_applied", 0));
  } else if (tag == "ORRERY_SERVER_CHECKPOINT_FAILED") {
    report_.checkpoint_error =
        absl::StrCat(line.role.substr(options_.role_prefix.size()), ": ", JsonGet<std::string>(body, "error", "?"));
    if (++report_.checkpoint_failures == 1 && options_.progress) {
      progress_.Print(absl::StrCat("checkpoint failed: ", report_.checkpoint_error,
                                   "; training goes on, the last good checkpoint (if any) stays"));
    }
  } else if (tag == "ORRERY_LEARNER" || tag == "ORRERY_LEARNER_DONE") {
    auto it = learner_index_.find(line.id);
    if (it != learner_index_.end()) {
      body["done"] = tag == "ORRERY_LEARNER_DONE";
      learner_progress_[it->second] = body;
    }
  }
}

void JobRun::Impl::OnExit(const ProcessExit& exit) {
  if (stopping_ && exit.stop_requested && exit.id != evaluator_) return;
  if (auto it = learner_index_.find(exit.id); it != learner_index_.end()) {
    if (!exit.status.ok() && !exit.stop_requested) {
      // A learner that died cannot say goodbye: leave on its behalf at once, so that hardsync
      // and ssp stop waiting for it now rather than after the learner timeout.
      auto id = learner_id_.find(exit.id);
      if (id != learner_id_.end() && id->second >= 0) EvictLearner(exit.role, id->second);
      learner_id_.erase(exit.id);
    }
    if (!exit.final()) {
      if (options_.progress) {
        progress_.Print(absl::StrFormat("%s %s; restarting in %s", exit.role, exit.status.ToString(),
                                        absl::FormatDuration(exit.restart_delay)));
      }
      return;
    }
    ++learners_exited_;
    if (exit.status.ok()) {
      ++report_.learners_finished;
    } else if (!exit.stop_requested) {
      ++report_.learners_failed;
      std::string why = absl::StrCat(exit.role, ": ", exit.status.ToString(), exit.error.empty() ? "" : " (" + exit.error + ")");
      report_.learner_failures.push_back(why);
      if (options_.progress) {
        progress_.Print(absl::StrCat(why, "; the job continues without it", LastLines(backend_, exit.id, 3)));
      }
    }
    if (learners_exited_ == job_.learners && !stopping_) {
      learners_end_ = Clock::now();
      if (report_.learners_finished == 0) {
        // The last lines shown are this exit's, so the failure named with them must be its own.
        const bool this_one_failed = !exit.status.ok() && !exit.stop_requested;
        const std::string why = this_one_failed                         ? report_.learner_failures.back()
                                : !report_.learner_failures.empty() ? report_.learner_failures.front()
                                                                     : "they were all stopped";
        Fail(absl::AbortedError(absl::StrCat("every learner failed; ", why,
                                             this_one_failed ? LastLines(backend_, exit.id, 10) : "")));
        return;
      }
      // Ask the evaluator for its final evaluation (it answers SIGTERM with one, then exits).
      evaluator_asked_to_stop_ = true;
      absl::Status st = backend_.Stop(evaluator_, absl::Minutes(5));
      if (!st.ok()) Fail(st);
    }
    return;
  }
  if (exit.id == evaluator_) {
    if (!exit.final()) {  // not asked to stop (it would not be restarted then): it comes back
      ++report_.evaluator_restarts;
      if (options_.progress) {
        progress_.Print(absl::StrFormat("evaluator %s; restarting in %s", exit.status.ToString(),
                                        absl::FormatDuration(exit.restart_delay)));
      }
      return;
    }
    if (evaluator_asked_to_stop_ && final_eval_seen_) {
      StopEverything(absl::Seconds(10));
    } else if (!stopping_ || !exit.stop_requested) {
      Fail(absl::AbortedError(absl::StrCat("the evaluator ", exit.status.ToString(),
                                           LastLines(backend_, exit.id, 10))));
    }
    return;
  }
  // A shard.
  if (!exit.final()) {
    ++report_.shard_restarts;
    if (options_.progress) {
      progress_.Print(absl::StrCat(exit.role, " ", exit.status.ToString(),
                                   "; restarting it from its last checkpoint"));
    }
    return;
  }
  Fail(absl::UnavailableError(absl::StrCat(exit.role, " ", exit.status.ToString(),
                                           LastLines(backend_, exit.id, 10))));
}

void JobRun::Impl::StartHealthChecks() {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      server::MakeChannelCredentials(ClientTls(job_));
  if (!credentials.ok()) return Fail(credentials.status());
  for (const std::string& endpoint : endpoints_) {
    shard_stubs_.push_back(proto::ParameterServer::NewStub(grpc::CreateChannel(endpoint, *credentials)));
  }
  shard_answered_.assign(endpoints_.size(), absl::Now());
  probing_.assign(endpoints_.size(), false);
  const absl::Duration period =
      std::clamp(options_.shard_timeout / 4, absl::Milliseconds(250), absl::Seconds(5));
  health_timer_ = loop_.RunEvery(period, [this] { CheckShards(); });
}

void JobRun::Impl::CheckShards() {
  if (stopping_) return;
  const absl::Time now = absl::Now();
  for (size_t s = 0; s < shard_stubs_.size(); ++s) {
    absl::StatusOr<ProcessInfo> info = backend_.Info(server_ids_[s]);
    if (!info.ok() || info->state != ProcessState::kRunning) {
      shard_answered_[s] = now;  // restarting: the clock starts again when it runs
      continue;
    }
    if (now - shard_answered_[s] > options_.shard_timeout) {
      return Fail(absl::UnavailableError(absl::StrCat(
          "server-", s, " at ", endpoints_[s], " (pid ", info->pid, ") has answered nothing for ",
          absl::FormatDuration(now - shard_answered_[s]), ": it is stopped or hung",
          LastLines(backend_, server_ids_[s], 5))));
    }
    if (probing_[s]) continue;
    probing_[s] = true;
    struct Call {
      grpc::ClientContext context;
      proto::StatsRequest request;
      proto::StatsResponse response;
    };
    auto call = std::make_shared<Call>();
    call->context.set_deadline(absl::ToChronoTime(now + std::min(options_.shard_timeout, absl::Seconds(10))));
    call->request.set_job_id(job_.name);
    call->request.set_token(token_);
    auto answered = liveness_.Guard([this, s](bool ok) {
      probing_[s] = false;
      if (ok) shard_answered_[s] = absl::Now();
    });
    {
      absl::MutexLock lock(&probes_->mu);
      probes_->live.insert(&call->context);
    }
    // The callback touches neither `this` nor its members directly: the run may be gone by then.
    // The destructor waits for it, so the loop (which outlives the run) is still there to post to.
    shard_stubs_[s]->async()->Stats(
        &call->context, &call->request, &call->response,
        [loop = &loop_, probes = probes_, call, answered](grpc::Status st) {
          loop->Post([answered, ok = st.ok()]() mutable { answered(ok); });
          absl::MutexLock lock(&probes->mu);
          probes->live.erase(&call->context);
        });
  }
}

void JobRun::Impl::EvictLearner(const std::string& role, int learner_id) {
  int evicted = 0;
  std::string errors;
  for (size_t s = 0; s < shard_stubs_.size(); ++s) {
    proto::LeaveRequest request;
    request.set_job_id(job_.name);
    request.set_token(token_);
    request.set_learner_id(learner_id);
    proto::LeaveResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::Status st = shard_stubs_[s]->Leave(&context, request, &response);
    if (st.ok()) {
      ++evicted;
    } else {
      absl::StrAppend(&errors, " ", endpoints_[s], ": ", st.error_message(), ";");
    }
  }
  if (evicted > 0) ++report_.learners_evicted;
  if (!errors.empty() && options_.progress) {
    progress_.Print(absl::StrCat("could not remove ", role, " (learner ", learner_id,
                                 ") from every shard; the learner timeout will:", errors));
  }
}

void JobRun::Impl::ShowProgress() {
  if (!options_.progress || stopping_ || learner_index_.empty()) return;
  int64_t steps = 0, total = 0;
  double ips = 0;
  for (const auto& [index, p] : learner_progress_) {
    steps += JsonGet<int64_t>(p, "step", JsonGet<int64_t>(p, "steps", 0));
    total += JsonGet<int64_t>(p, "steps", 0);
    if (!JsonGet<bool>(p, "done", false)) ips += JsonGet<double>(p, "images_per_second", 0);
  }
  std::string acc = "";
  if (last_eval_) acc = absl::StrFormat("  test accuracy %.2f%%", 100 * JsonGet<double>(*last_eval_, "test_accuracy", 0));
  progress_.Update(absl::StrFormat("[%6.1fs] learners %d/%d running  steps %d/%d  %.0f images/s%s",
                                   SecondsSince(learners_start_), job_.learners - learners_exited_,
                                   job_.learners, steps, total, ips, acc));
}

void JobRun::Impl::Start(Done done) {
  done_ = std::move(done);
  report_.job = job_.name;
  line_listener_ = backend_.AddLineListener([this](const OutputLine& line) {
    if (own_.count(line.id) != 0) OnLine(line);
  });
  exit_listener_ = backend_.AddExitListener([this](const ProcessExit& exit) {
    if (own_.count(exit.id) == 0) return;
    OnExit(exit);
    MaybeFinish();
  });
  if (options_.timeout != absl::InfiniteDuration()) {
    timeout_timer_ = loop_.RunAfter(options_.timeout, [this] {
      timeout_timer_ = 0;
      Fail(absl::DeadlineExceededError(absl::StrCat("the job did not finish within ",
                                                    absl::FormatDuration(options_.timeout))));
    });
  }
  ticker_ = loop_.RunEvery(absl::Seconds(1), [this] { ShowProgress(); });
  if (absl::Status st = CheckOpenFileLimit(job_); !st.ok()) return Fail(st);
  if (absl::Status st = CheckMemoryAvailable(job_); !st.ok()) return Fail(st);
  if (absl::Status st = LockLogDir(); !st.ok()) return Fail(st);
  StartServers();
}

absl::Status JobRun::Impl::LockLogDir() {
  if (options_.log_dir.empty()) return absl::OkStatus();
  std::error_code ec;
  std::filesystem::create_directories(options_.log_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create log dir ", options_.log_dir, ": ", ec.message()));
  // Two runs there would interleave their logs and events files.
  ASSIGN_OR_RETURN(log_dir_lock_, FileLock::Acquire(options_.log_dir + "/.lock",
                                                    absl::StrCat("log dir ", options_.log_dir), "another run",
                                                    "wait for it to end, or give this run its own log dir (orrery run --log-dir)"));
  return absl::OkStatus();
}

void JobRun::Impl::Finish() {
  finished_ = true;
  if (ticker_) loop_.Cancel(ticker_);
  ticker_ = 0;
  if (health_timer_) loop_.Cancel(health_timer_);
  health_timer_ = 0;
  if (timeout_timer_) loop_.Cancel(timeout_timer_);
  timeout_timer_ = 0;
  Done done = std::move(done_);
  done_ = nullptr;
  if (!failure_.ok()) return done(failure_);
  if (!last_eval_) return done(absl::InternalError("the job ended without an evaluation"));

  FillFromFinalEval(*last_eval_, &report_);
  report_.train_seconds = std::chrono::duration<double>(learners_end_.value_or(Clock::now()) - learners_start_).count();
  const uint64_t trained = report_.samples_applied - std::min(report_.samples_applied, report_.samples_at_resume);
  report_.images_per_second = static_cast<double>(trained) / std::max(report_.train_seconds, 1e-9);
  for (const auto& [index, p] : learner_progress_) {
    if (!JsonGet<bool>(p, "done", false)) continue;
    AddLearnerTraffic(p, &report_);
  }
  report_.wall_seconds = SecondsSince(start_);
  done(report_);  // may destroy this run: nothing after it
}

JobRun::JobRun(JobSpec job, RunJobOptions options, EventLoop& loop, Backend& backend)
    : impl_(std::make_unique<Impl>(std::move(job), std::move(options), loop, backend)) {}
JobRun::~JobRun() = default;
void JobRun::Start(Done done) { impl_->Start(std::move(done)); }
void JobRun::Cancel(absl::Status why, absl::Duration grace) { impl_->Cancel(std::move(why), grace); }
bool JobRun::finished() const { return impl_->finished(); }
std::vector<ProcessId> JobRun::processes() const { return impl_->processes(); }

absl::Status CheckOpenFileLimit(const JobSpec& job) {
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return absl::OkStatus();
  const int64_t processes = int64_t{job.servers} + job.learners + 1;
  const int64_t needed = kOpenFilesPerProcess * processes + 64;
  if (needed <= static_cast<int64_t>(limit.rlim_cur)) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "servers + learners: the job's ", processes, " processes (with the evaluator) need about ", needed,
      " open files in the process that supervises them, more than its limit of ", limit.rlim_cur,
      " (raise it with ulimit -n, or run the job with fewer processes or on the mpi, slurm or kubernetes backend)"));
}

int64_t JobMemoryBytes(const JobSpec& job, const learner::ModelFootprint& model) {
  constexpr double kMiB = 1 << 20;
  const double weights = 4.0 * static_cast<double>(model.parameters);
  const double per_sample = 16.0 * static_cast<double>(model.values_per_sample);
  const double process = 3 * weights + 160 * kMiB;
  const double bytes = job.learners * (process + per_sample * job.batch) + (process + per_sample * learner::kEvalBatch) +
                       3 * weights + job.servers * 48 * kMiB;
  return bytes >= 0x1p62 ? int64_t{1} << 62 : static_cast<int64_t>(bytes);
}

namespace {

absl::StatusOr<learner::ModelFootprint> JobModelFootprint(const JobSpec& job) {
  absl::StatusOr<learner::ModelSpec> model = learner::LoadModelSpec(job.model_path);
  if (!model.ok()) return model.status();
  return learner::MeasureModel(*model);
}

}  // namespace

std::optional<int64_t> JobMemoryEstimate(const JobSpec& job) {
  absl::StatusOr<learner::ModelFootprint> footprint = JobModelFootprint(job);
  if (!footprint.ok()) return std::nullopt;
  return JobMemoryBytes(job, *footprint);
}

absl::Status CheckMemory(const JobSpec& job, int64_t limit_bytes, std::string_view limit_what) {
  absl::StatusOr<learner::ModelFootprint> footprint = JobModelFootprint(job);
  if (!footprint.ok()) return absl::OkStatus();
  const int64_t needed = JobMemoryBytes(job, *footprint);
  if (needed <= limit_bytes) return absl::OkStatus();
  auto size = [](double bytes) {
    return bytes < (1 << 30) ? absl::StrFormat("%.0f MiB", bytes / (1 << 20)) : absl::StrFormat("%.1f GiB", bytes / (1 << 30));
  };
  return absl::ResourceExhaustedError(absl::StrFormat(
      "model: its %d parameters (%s of fp32 weights) and %d activations per sample, in %d learner(s) of batch %d, "
      "the evaluator and %d shard(s), need about %s, more than the %s %s; use a smaller model or batch, or fewer "
      "learners",
      footprint->parameters, size(4.0 * static_cast<double>(footprint->parameters)), footprint->values_per_sample,
      job.learners, job.batch, job.servers, size(static_cast<double>(needed)), size(static_cast<double>(limit_bytes)),
      limit_what));
}

absl::Status CheckMemoryAvailable(const JobSpec& job) {
  const int64_t available = MemInfoBytes("MemAvailable");
  if (available < 0) return absl::OkStatus();
  return CheckMemory(job, available, "this machine has available");
}

std::vector<std::string> ServerArgv(const JobSpec& job, const std::string& binary, int shard,
                                    const std::string& listen, bool resume) {
  std::vector<std::string> argv = {binary, "server",
                                   "--listen", listen,
                                   "--shard", absl::StrCat(shard),
                                   "--shards", absl::StrCat(job.servers),
                                   "--job", job.name,
                                   "--protocol", ProtocolToString(job.protocol),
                                   "--learners", absl::StrCat(job.learners),
                                   "--lr", Num(job.lr.base),
                                   "--staleness-rule", LrStalenessName(job.lr.staleness),
                                   "--momentum", Num(job.lr.momentum),
                                   // Prometheus /metrics beside the gRPC port, on a port the OS chooses.
                                   "--metrics-listen", absl::StrCat(listen.substr(0, listen.rfind(':')), ":0")};
  if (!job.lr.decay_epochs.empty()) {
    // Epochs of the training set (all learners' samples together) as samples the shards count.
    const double train = static_cast<double>(job.limit_train.value_or(kFashionMnistTrainImages));
    std::vector<std::string> at;
    for (double e : job.lr.decay_epochs) {
      at.push_back(absl::StrCat(std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(e * train)))));
    }
    argv.insert(argv.end(), {"--lr-decay-at-samples", absl::StrJoin(at, ","),
                             "--lr-decay-factor", Num(job.lr.decay_factor)});
  }
  if (job.learner_timeout) {
    argv.insert(argv.end(), {"--learner-timeout", Num(absl::ToDoubleSeconds(*job.learner_timeout))});
  }
  if (job.checkpoint) {
    argv.insert(argv.end(), {"--checkpoint-dir", job.checkpoint->dir, "--checkpoint-every",
                             Num(absl::ToDoubleSeconds(job.checkpoint->every))});
    if (resume) argv.push_back("--resume");
  }
  if (job.tls) {
    argv.insert(argv.end(), {"--tls-cert", job.tls->cert, "--tls-key", job.tls->key});
    if (job.tls->mutual) argv.insert(argv.end(), {"--tls-client-ca", job.tls->ca});
  }
  if (job.precision.weights == NumberFormat::kFixed16) {
    argv.insert(argv.end(), {"--weights", "fixed16", "--weights-fl", absl::StrCat(job.precision.fl)});
  }
  return argv;
}

namespace {
std::vector<std::string> CommonLearnerArgv(const JobSpec& job, const std::string& binary,
                                           const std::vector<std::string>& servers, int threads) {
  std::vector<std::string> argv = {binary, "learner",
                                   "--servers", absl::StrJoin(servers, ","),
                                   "--job", job.name,
                                   "--model", job.model_path,
                                   "--data", job.data_dir,
                                   "--learners", absl::StrCat(job.learners),
                                   "--batch", absl::StrCat(job.batch),
                                   "--epochs", Num(job.epochs),
                                   "--seed", absl::StrCat(job.seed),
                                   "--threads", absl::StrCat(threads)};
  if (job.limit_train) argv.insert(argv.end(), {"--limit-train", absl::StrCat(*job.limit_train)});
  const server::TlsFiles tls = ClientTls(job);
  if (!tls.ca.empty()) argv.insert(argv.end(), {"--tls-ca", tls.ca});
  if (!tls.cert.empty()) argv.insert(argv.end(), {"--tls-cert", tls.cert, "--tls-key", tls.key});
  if (job.precision.compute == NumberFormat::kFixed16) {
    argv.insert(argv.end(), {"--precision", "fixed16", "--fl", absl::StrCat(job.precision.fl)});
  }
  if (job.precision.wire == NumberFormat::kFixed16) argv.insert(argv.end(), {"--wire", "fixed16"});
  return argv;
}
}  // namespace

std::vector<std::string> LearnerArgv(const JobSpec& job, const std::string& binary, int index,
                                     const std::vector<std::string>& servers, int threads) {
  std::vector<std::string> argv = CommonLearnerArgv(job, binary, servers, threads);
  argv.insert(argv.end(), {"--index", absl::StrCat(index)});
  const double slow = SlowFactor(job, index);
  if (slow != 1) argv.insert(argv.end(), {"--slow", Num(slow)});
  return argv;
}

std::vector<std::string> EvaluatorArgv(const JobSpec& job, const std::string& binary,
                                       const std::vector<std::string>& servers, int threads) {
  std::vector<std::string> argv = CommonLearnerArgv(job, binary, servers, threads);
  argv.push_back("--evaluator");
  argv.insert(argv.end(), {"--eval-every", Num(job.eval_every ? absl::ToDoubleSeconds(*job.eval_every) : 10.0)});
  if (job.limit_test) argv.insert(argv.end(), {"--limit-test", absl::StrCat(*job.limit_test)});
  return argv;
}

absl::StatusOr<RunReport> RunJob(const JobSpec& job, const RunJobOptions& options, int* stopped_by) {
  if (options.orrery_binary.empty()) return absl::InvalidArgumentError("RunJob: no orrery binary given");
  RunJobOptions bound = options;
  if (job.bind == Binding::kCores && bound.cpus.empty()) {
    absl::StatusOr<std::vector<int>> cpus = AllowedCpus();
    if (!cpus.ok()) return absl::Status(cpus.status().code(), absl::StrCat("bind: cores: ", cpus.status().message()));
    bound.cpus = *std::move(cpus);
  }
  EventLoop loop;
  LocalBackend backend(loop);
  JobRun run(job, bound, loop, backend);
  int interrupts = 0;
  loop.OnSignals({SIGINT, SIGTERM}, [&](int sig) {
    if (++interrupts == 1) {
      if (stopped_by != nullptr) *stopped_by = sig;
      run.Cancel(absl::CancelledError(absl::StrCat("interrupted by ", strsignal(sig))), absl::Seconds(5));
    } else {
      backend.StopAll(absl::ZeroDuration(), [] {});  // a second Ctrl-C: kill now
    }
  });
  std::optional<absl::StatusOr<RunReport>> result;
  run.Start([&result](absl::StatusOr<RunReport> r) { result = std::move(r); });
  loop.RunUntil([&result] { return result.has_value(); }, absl::InfiniteDuration());
  return *std::move(result);
}

std::string RunReportJson(const RunReport& r, const JobSpec& job) {
  nlohmann::json j;
  j["job"] = r.job;
  j["test_accuracy"] = r.test_accuracy;
  j["test_loss"] = r.test_loss;
  j["wall_seconds"] = r.wall_seconds;
  j["train_seconds"] = r.train_seconds;
  j["updates_applied"] = r.updates_applied;
  j["gradients_applied"] = r.gradients_applied;
  j["gradients_rejected"] = r.gradients_rejected;
  j["samples_applied"] = r.samples_applied;
  if (r.samples_at_resume > 0) j["samples_at_resume"] = r.samples_at_resume;
  j["images_per_second"] = r.images_per_second;
  j["staleness"] = {{"mean", r.staleness_mean}, {"max", r.staleness_max}, {"histogram", r.staleness_histogram}};
  j["gradient_age_seconds"] = {{"mean", r.gradient_age_mean_seconds}, {"max", r.gradient_age_max_seconds}};
  j["time_to_target_seconds"] = r.time_to_target_seconds ? nlohmann::json(*r.time_to_target_seconds) : nlohmann::json(nullptr);
  j["learners_finished"] = r.learners_finished;
  j["learners_failed"] = r.learners_failed;
  j["learners_evicted"] = r.learners_evicted;
  j["shard_restarts"] = r.shard_restarts;
  j["evaluator_restarts"] = r.evaluator_restarts;
  j["updates_lost"] = r.updates_lost;
  j["checkpoint_failures"] = r.checkpoint_failures;
  if (!r.checkpoint_error.empty()) j["checkpoint_error"] = r.checkpoint_error;
  j["learner_failures"] = r.learner_failures;
  auto per = [](uint64_t bytes, uint64_t n) { return n == 0 ? 0.0 : static_cast<double>(bytes) / n; };
  j["wire"] = {{"encoding", NumberFormatName(job.precision.wire)},
               {"pushes", r.pushes}, {"push_bytes", r.push_bytes},
               {"bytes_per_push", per(r.push_bytes, r.pushes)},
               {"pulls", r.pulls}, {"pull_bytes", r.pull_bytes},
               {"bytes_per_pull", per(r.pull_bytes, r.pulls)},
               {"connection_resets", r.connection_resets}};
  j["learner_phases"] = {{"pull_seconds", r.learner_pull_seconds},
                         {"compute_seconds", r.learner_compute_seconds},
                         {"push_seconds", r.learner_push_seconds}};
  auto& evals = j["evals"] = nlohmann::json::array();
  for (const EvalPoint& p : r.evals) {
    evals.push_back({{"seconds", p.seconds}, {"test_accuracy", p.test_accuracy}, {"test_loss", p.test_loss},
                     {"updates_applied", p.updates_applied}, {"samples_applied", p.samples_applied}});
  }
  nlohmann::json slow = nlohmann::json::array();
  for (const SlowLearner& s : job.slow_learners) slow.push_back({{"learner", s.learner}, {"factor", s.factor}});
  j["job_spec"] = {{"name", job.name}, {"model", job.model_path}, {"servers", job.servers},
                   {"learners", job.learners}, {"protocol", ProtocolToString(job.protocol)},
                   {"lr", {{"base", job.lr.base}, {"staleness", LrStalenessName(job.lr.staleness)},
                           {"momentum", job.lr.momentum},
                           {"decay_epochs", job.lr.decay_epochs},
                           {"decay_factor", job.lr.decay_factor}}},
                   {"batch", job.batch}, {"epochs", job.epochs}, {"seed", job.seed},
                   {"target_accuracy", job.target_accuracy ? nlohmann::json(*job.target_accuracy) : nlohmann::json(nullptr)},
                   {"slow_learners", slow},
                   {"precision", {{"wire", NumberFormatName(job.precision.wire)},
                                  {"weights", NumberFormatName(job.precision.weights)},
                                  {"compute", NumberFormatName(job.precision.compute)},
                                  {"fl", job.precision.fl}}}};
  return j.dump(2) + "\n";
}

}  // namespace orrery::scheduler
