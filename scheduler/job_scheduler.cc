#include "scheduler/job_scheduler.h"

#include <glog/logging.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "scheduler/adopted_process.h"
#include "scheduler/group_job_run.h"
#include "scheduler/job_report.h"
#include "scheduler/job_spec.h"
#include "scheduler/run_job.h"

namespace orrery::scheduler {

namespace fs = std::filesystem;

// How far a re-attached local job's end has come (JobScheduler::AdvanceAdopted).
enum class AdoptedStage {
  kTraining,         // learners run
  kFinalEvaluation,  // every learner has exited; the evaluator was asked for its final evaluation
  kStoppingShards,   // the evaluator has exited; the shards were asked to stop
};

struct JobScheduler::Entry {
  JobRecord record;
  std::optional<JobSpec> spec;  // parsed when it started
  Backend* backend = nullptr;      // the one its spec names (null: none here; it cannot start)
  std::unique_ptr<JobRunner> run;  // while it runs under this daemon
  std::map<ProcessId, size_t> process_index;  // backend process -> index in record.processes
  // While re-attached: the survivors of an earlier daemon, with their index in record.processes.
  std::vector<std::pair<size_t, std::unique_ptr<AdoptedProcess>>> adopted;
  AdoptedStage stage = AdoptedStage::kTraining;
  std::string adopted_failure;      // set: a shard or the evaluator ended while learners trained; all stop
  std::set<size_t> stop_requested;  // adopted processes this scheduler sent SIGTERM
  TimerId kill_timer = 0;
  // Processes of a re-attached job that exited and that this daemon restarted (Relaunch: children
  // of the local backend), by index in record.processes; their incarnations continue the
  // record's count from incarnation_base.
  std::map<size_t, ProcessId> relaunched;
  std::map<ProcessId, int> incarnation_base;
};

namespace {

std::string RolePrefix(int64_t id) { return absl::StrCat("job", id, ":"); }

bool IsLearner(const std::string& role) { return absl::StartsWith(role, "learner-"); }
bool IsShard(const std::string& role) { return absl::StartsWith(role, "server-"); }
bool IsEvaluator(const std::string& role) { return role == "evaluator"; }

// How a process the daemon did not start ended, as the backend words a child's exit ("exit code
// 3") when it recorded its code beside its log (LOG_DIR/ROLE.log.exit: it returned from main),
// followed by `context`; else `unknown`.
std::string AdoptedExit(const JobRecord& r, const ProcessRecord& p, absl::string_view context,
                        absl::string_view unknown) {
  const std::optional<int> code = r.log_dir.empty() || p.pid <= 0
                                      ? std::nullopt
                                      : RecordedExitCode(absl::StrCat(r.log_dir, "/", p.role, ".log"), p.pid);
  if (!code.has_value()) return std::string(unknown);
  return absl::StrCat(ExitStatus{*code, 0}.ToString(), context);
}

// ProcessRecord::relaunch: what a restarted daemon needs to start the process again.
std::string RelaunchJson(const ProcessSpec& spec) {
  return nlohmann::json{{"argv", spec.argv},
                        {"env", spec.env},
                        {"log_path", spec.log_path},
                        {"working_dir", spec.working_dir}}
      .dump();
}

absl::StatusOr<ProcessSpec> RelaunchSpec(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  ProcessSpec spec;
  try {
    spec.argv = j.at("argv").get<std::vector<std::string>>();
    spec.env = j.at("env").get<std::map<std::string, std::string>>();
    spec.log_path = j.at("log_path").get<std::string>();
    spec.working_dir = j.at("working_dir").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("stored relaunch spec is unreadable: ", e.what()));
  }
  if (spec.argv.empty()) return absl::DataLossError("stored relaunch spec has no argv");
  return spec;
}

// Whether the learner `role` wrote its ORRERY_LEARNER_DONE line to its events file.
bool SaidDone(const std::string& log_dir, const std::string& role) {
  std::ifstream in(EventsFilePath(log_dir, role));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "ORRERY_LEARNER_DONE ")) return true;
  }
  return false;
}

// Whether the job's learners and evaluator append to events files (JobRun always does when it
// has a log dir; the ranks of an mpi or slurm launch do where they can write to it).
bool HasEventsFiles(const JobRecord& r) {
  std::error_code ec;
  return !r.log_dir.empty() && (r.backend == "local" || fs::exists(EventsFilePath(r.log_dir, "evaluator"), ec));
}

std::string FormatLogLine(absl::Time now, const OutputLine& line) {
  return FormatLogRecord(now, line.role, line.stream == Stream::kStdout ? "out" : "err", line.text);
}

}  // namespace

JobScheduler::JobScheduler(EventLoop& loop, SchedulerBackends backends, JobStore& store, SchedulerOptions options)
    : loop_(loop), backends_(std::move(backends)), store_(store), options_(std::move(options)),
      queue_(options_.slots, options_.memory_bytes) {
  for (Backend* backend : {backends_.local, backends_.mpi, backends_.slurm}) {
    if (backend == nullptr) continue;
    exit_listeners_.emplace_back(backend, backend->AddExitListener([this, backend](const ProcessExit& exit) {
      OnProcessExit(backend, exit);
    }));
  }
}

namespace {
SchedulerBackends LocalOnly(Backend& local) {
  SchedulerBackends backends;
  backends.local = &local;
  return backends;
}
}  // namespace

JobScheduler::JobScheduler(EventLoop& loop, Backend& local, JobStore& store, SchedulerOptions options)
    : JobScheduler(loop, LocalOnly(local), store, std::move(options)) {}

JobScheduler::~JobScheduler() {
  liveness_.Close();
  for (auto& [backend, listener] : exit_listeners_) backend->RemoveListener(listener);
  for (auto& [id, entry] : jobs_) {
    if (entry->kill_timer) loop_.Cancel(entry->kill_timer);
  }
}

Backend* JobScheduler::BackendFor(const std::string& kind) const {
  if (kind == "local") return backends_.local;
  if (kind == "mpi") return backends_.mpi;
  if (kind == "slurm") return backends_.slurm;
  return nullptr;
}

int64_t JobScheduler::NowMs() const { return absl::ToUnixMillis(options_.now()); }

JobScheduler::Entry* JobScheduler::Find(const std::string& job) const {
  int64_t id = 0;
  if (absl::SimpleAtoi(job, &id)) {
    auto it = jobs_.find(id);
    return it == jobs_.end() ? nullptr : it->second.get();
  }
  for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) {
    if (it->second->record.name == job) return it->second.get();
  }
  return nullptr;
}

void JobScheduler::Persist(const Entry& entry, bool with_processes) {
  absl::Status st = with_processes ? store_.UpdateWithProcesses(entry.record) : store_.Update(entry.record);
  if (!st.ok()) LOG(ERROR) << "job " << entry.record.id << ": " << st;
}

void JobScheduler::Changed(const Entry& entry) {
  std::vector<std::function<void(const JobRecord&)>> watchers;
  for (const auto& [id, fn] : job_watches_) watchers.push_back(fn);
  for (const auto& fn : watchers) fn(entry.record);
  if (!IsTerminal(entry.record.state)) return;
  std::vector<std::function<void()>> ends;
  for (auto it = line_watches_.begin(); it != line_watches_.end();) {
    if (it->second.job == entry.record.id) {
      ends.push_back(std::move(it->second.end));
      it = line_watches_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& end : ends) {
    if (end) end();
  }
}

JobNeed JobScheduler::NeedOf(const JobRecord& record) const {
  JobNeed need{record.slots, 0};
  if (options_.memory_bytes > 0 && record.backend == "local") {
    // Stored specs parsed when they were submitted; a model file changed or gone since counts 0.
    absl::StatusOr<JobSpec> spec = ParseJobSpec(record.spec_yaml, record.base_dir);
    if (spec.ok()) need.memory_bytes = JobMemoryEstimate(*spec).value_or(0);
  }
  return need;
}

absl::Status JobScheduler::Recover() {
  ASSIGN_OR_RETURN(std::vector<JobRecord> records, store_.LoadAll());
  for (JobRecord& record : records) {
    const int64_t id = record.id;
    auto entry = std::make_unique<Entry>();
    entry->record = std::move(record);
    Entry& e = *jobs_.emplace(id, std::move(entry)).first->second;
    if (e.record.state == JobState::kQueued) {
      // A daemon restarted with fewer --slots or less --memory than a queued job needs would hold
      // it at the head of the queue forever, and every job behind it.
      const JobNeed need = NeedOf(e.record);
      if (need.slots > options_.slots) {
        Finish(e, JobState::kFailed,
               absl::StrCat("the scheduler was restarted with fewer slots than the job needs: ", need.slots,
                            " slots, and it has ", options_.slots, " (orrery scheduler --slots)"));
      } else if (options_.memory_bytes > 0 && need.memory_bytes > options_.memory_bytes) {
        Finish(e, JobState::kFailed,
               absl::StrFormat("the scheduler was restarted with less memory than the job needs: about %.0f MiB, "
                               "and it lends %.0f MiB (orrery scheduler --memory)",
                               static_cast<double>(need.memory_bytes) / (1 << 20),
                               static_cast<double>(options_.memory_bytes) / (1 << 20)));
      } else {
        queue_.Push(id, e.record.priority, need);
      }
    } else if (e.record.state == JobState::kRunning) {
      Reattach(e);
    }
  }
  ScheduleSoon();
  return absl::OkStatus();
}

void JobScheduler::Reattach(Entry& entry) {
  JobRecord& r = entry.record;
  const std::string boot = BootId();
  if (!r.boot_id.empty() && !boot.empty() && r.boot_id != boot) {
    return Finish(entry, JobState::kLost, "the machine restarted while the job ran; its processes are gone");
  }
  if (r.processes.empty()) {
    return Finish(entry, JobState::kLost, "the scheduler stopped before it had recorded any process of the job");
  }
  // A local job's learners and evaluator append their tagged lines to events files, which tell
  // how they ended when no scheduler saw it: a learner that has exited is no loss there.
  const bool local = r.backend == "local";
  std::vector<std::string> gone;
  std::vector<size_t> restartable_gone;  // local processes it may restart, gone while no scheduler ran
  std::vector<std::pair<size_t, std::unique_ptr<AdoptedProcess>>> alive;
  for (size_t i = 0; i < r.processes.size(); ++i) {
    ProcessRecord& p = r.processes[i];
    if (!p.exit.empty()) continue;  // it had exited, and the previous daemon saw how
    absl::StatusOr<std::unique_ptr<AdoptedProcess>> adopted = AdoptedProcess::Adopt(loop_, p.pid, p.start_ticks);
    if (adopted.ok()) {
      alive.emplace_back(i, std::move(*adopted));
    } else if (local && IsLearner(p.role)) {
      p.exit = AdoptedExit(r, p, " (while no scheduler ran)",
                           "exited while no scheduler ran (exit status unknown; its events file says whether it finished)");
      restartable_gone.push_back(i);
    } else if (local && (IsShard(p.role) || IsEvaluator(p.role)) && !p.relaunch.empty()) {
      p.exit = AdoptedExit(r, p, " (while no scheduler ran)", "exited while no scheduler ran (exit status unknown)");
      restartable_gone.push_back(i);
    } else {
      gone.push_back(absl::StrCat(p.role, " (pid ", p.pid, ")"));
      p.exit = AdoptedExit(r, p, " (gone when the scheduler restarted)",
                           "gone when the scheduler restarted (exit status unknown)");
    }
  }
  if (!gone.empty()) {
    for (auto& [index, process] : alive) {
      process->SignalGroup(SIGKILL).IgnoreError();
      r.processes[index].exit = "killed by the restarted scheduler (the job had lost other processes)";
    }
    Persist(entry, /*with_processes=*/true);
    return Finish(entry, JobState::kLost,
                  absl::StrCat("the scheduler restarted while the job ran and found ", absl::StrJoin(gone, ", "),
                               " gone", alive.empty() ? "" : absl::StrCat("; killed the ", alive.size(), " process(es) still running")));
  }
  if (alive.empty()) {
    Persist(entry, /*with_processes=*/true);
    if (!HasEventsFiles(r)) {
      return Finish(entry, JobState::kLost,
                    "every process of the job had exited when the scheduler restarted, but its result was not recorded");
    }
    return FinishAdoptedFromEvents(entry);
  }
  r.reattached = true;
  r.reason = absl::StrCat("re-attached after a scheduler restart to its ", alive.size(), " running process(es); ",
                          HasEventsFiles(r) ? "their output is no longer visible, but their events files are"
                                            : "their output and exit codes are no longer visible");
  entry.adopted = std::move(alive);
  queue_.Hold(r.id, NeedOf(r));
  const int64_t id = r.id;
  for (auto& [index, process] : entry.adopted) process->OnExit([this, id] { OnAdoptedExit(id); });
  if (!r.cancel_requested) {
    for (size_t index : restartable_gone) Relaunch(entry, index);  // a learner: if it had not finished
  }
  Persist(entry, /*with_processes=*/true);
  LOG(WARNING) << "job " << id << " (" << r.name << "): " << r.reason;
  if (r.cancel_requested) {  // the previous daemon was cancelling it
    StopAdopted(entry, [](const std::string&) { return true; }, options_.stop_grace);
  } else {
    AdvanceAdopted(entry);  // its learners may all have finished already
  }
}

void JobScheduler::StopAdopted(Entry& entry, const std::function<bool(const std::string& role)>& which,
                               absl::Duration grace) {
  for (const auto& [index, child] : entry.relaunched) {
    if (which(entry.record.processes[index].role)) backends_.local->Stop(child, grace).IgnoreError();
  }
  std::vector<size_t> targets;
  for (auto& [index, process] : entry.adopted) {
    if (entry.relaunched.count(index) || process->exited() || !which(entry.record.processes[index].role)) continue;
    process->SignalGroup(SIGTERM).IgnoreError();
    entry.stop_requested.insert(index);
    targets.push_back(index);
  }
  if (entry.kill_timer) loop_.Cancel(entry.kill_timer);
  entry.kill_timer = 0;
  if (targets.empty()) return;
  const int64_t id = entry.record.id;
  entry.kill_timer = loop_.RunAfter(grace, [this, id, targets] {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    it->second->kill_timer = 0;
    for (auto& [index, process] : it->second->adopted) {
      if (std::find(targets.begin(), targets.end(), index) != targets.end() && !process->exited()) {
        process->SignalGroup(SIGKILL).IgnoreError();
      }
    }
  });
}

// Drives a re-attached local job to its end as JobRun would have: once every learner has exited,
// SIGTERM asks the evaluator for its final evaluation; once the evaluator has exited, the shards
// are stopped. A shard or the evaluator that it cannot restart (Relaunch) ending while learners
// train fails the job. Jobs launched as one group (mpi, slurm) end by themselves: their ranks
// coordinate through their launcher.
void JobScheduler::AdvanceAdopted(Entry& entry) {
  JobRecord& r = entry.record;
  if (r.backend != "local" || r.state != JobState::kRunning || r.cancel_requested || shutting_down_ ||
      !entry.adopted_failure.empty()) {
    return;
  }
  bool learners = false, evaluator = false;
  std::string ended, ended_exit;  // a shard or the evaluator that has exited, and how
  for (const ProcessRecord& p : r.processes) {
    const bool running = p.exit.empty();
    if (IsLearner(p.role)) {
      learners |= running;
    } else {
      if (p.role == "evaluator") evaluator |= running;
      if (!running && ended.empty()) {
        ended = p.role;
        ended_exit = p.exit;
      }
    }
  }
  auto all = [](const std::string&) { return true; };
  switch (entry.stage) {
    case AdoptedStage::kTraining:
      if (learners) {
        if (ended.empty()) return;
        entry.adopted_failure = absl::StrCat(ended, " exited while the learners trained, after a scheduler restart "
                                             "had re-attached to the job (", ended_exit, "; see ", ended, ".log)");
        return StopAdopted(entry, all, options_.stop_grace);
      }
      if (evaluator) {
        entry.stage = AdoptedStage::kFinalEvaluation;
        // It answers SIGTERM with its final evaluation, then exits.
        return StopAdopted(entry, [](const std::string& role) { return role == "evaluator"; }, absl::Minutes(5));
      }
      [[fallthrough]];
    case AdoptedStage::kFinalEvaluation:
      if (evaluator) return;
      entry.stage = AdoptedStage::kStoppingShards;
      return StopAdopted(entry, all, absl::Seconds(10));
    case AdoptedStage::kStoppingShards:
      return;
  }
}

bool JobScheduler::Relaunch(Entry& entry, size_t index) {
  JobRecord& r = entry.record;
  ProcessRecord& p = r.processes[index];
  const bool learner = IsLearner(p.role), shard = IsShard(p.role);
  // A learner or the evaluator is restarted while the learners train; a shard also while the
  // evaluator evaluates the final weights, which it pulls from the shards.
  const bool stage_allows = entry.stage == AdoptedStage::kTraining ||
                            (shard && entry.stage == AdoptedStage::kFinalEvaluation);
  if (!(learner || shard || IsEvaluator(p.role)) || p.relaunch.empty() || backends_.local == nullptr || r.backend != "local" ||
      r.state != JobState::kRunning || r.cancel_requested || shutting_down_ || !stage_allows ||
      !entry.adopted_failure.empty() || entry.relaunched.count(index) || (learner && SaidDone(r.log_dir, p.role))) {
    return false;
  }
  if (!entry.spec) {
    absl::StatusOr<JobSpec> spec = ParseJobSpec(r.spec_yaml, r.base_dir);
    if (!spec.ok()) return false;
    entry.spec = *std::move(spec);
  }
  // Without a checkpoint a restarted shard would come back empty (JobRun does not restart it either).
  if (shard && !entry.spec->checkpoint) return false;
  const RestartPolicy& policy = entry.spec->restart;
  if (p.incarnation >= policy.max_restarts) {
    absl::StrAppend(&p.exit, "; not restarted: ", p.incarnation, " of its ", policy.max_restarts,
                    " restart(s) (the spec's restart.max_restarts) are spent");
    store_.PutProcess(r.id, p).IgnoreError();
    return false;
  }
  absl::StatusOr<ProcessSpec> spec = RelaunchSpec(p.relaunch);
  if (!spec.ok()) {
    LOG(WARNING) << "job " << r.id << ": cannot restart " << p.role << ": " << spec.status();
    return false;
  }
  spec->role = RolePrefix(r.id) + p.role;
  spec->restart = policy;
  spec->restart.max_restarts = policy.max_restarts - p.incarnation - 1;  // the backend makes the rest
  absl::StatusOr<ProcessId> child = backends_.local->Start(*spec);
  if (!child.ok()) {
    LOG(WARNING) << "job " << r.id << ": cannot restart " << p.role << ": " << child.status();
    absl::StrAppend(&p.exit, "; restarting it failed: ", child.status().message());
    store_.PutProcess(r.id, p).IgnoreError();
    return false;
  }
  const std::string ended = p.exit;
  entry.backend = backends_.local;  // a re-attached entry had none: its processes were adopted
  absl::StatusOr<ProcessInfo> info = backends_.local->Info(*child);
  entry.relaunched[index] = *child;
  entry.incarnation_base[*child] = p.incarnation + 1;
  entry.process_index[*child] = index;
  process_job_[{backends_.local, *child}] = r.id;
  p.pid = info.ok() ? info->pid : 0;
  p.start_ticks = p.pid > 0 ? ProcessStartTicks(p.pid).value_or(0) : 0;
  p.incarnation += 1;
  p.exit.clear();
  store_.PutProcess(r.id, p).IgnoreError();
  Changed(entry);
  LOG(WARNING) << "job " << r.id << ": " << p.role << " " << ended << (learner ? " without finishing" : "")
               << " while re-attached; restarted it (pid " << p.pid << ", restart "
               << p.incarnation << " of " << policy.max_restarts << ")";
  return true;
}

void JobScheduler::OnAdoptedExit(int64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Entry& entry = *it->second;
  bool all = true;
  for (auto& [index, process] : entry.adopted) {
    if (entry.relaunched.count(index)) continue;  // a child of this daemon now: the backend reports it
    if (process->exited()) {
      if (entry.record.processes[index].exit.empty()) {
        const bool stopped = entry.stop_requested.count(index) > 0;
        ProcessRecord& p = entry.record.processes[index];
        p.exit = AdoptedExit(entry.record, p, stopped ? " (stop requested)" : "",
                             stopped ? "exited (stop requested; status unknown: not a child of this scheduler)"
                                     : "exited (status unknown: not a child of this scheduler, killed by a signal?)");
        store_.PutProcess(id, p).IgnoreError();
        Changed(entry);
        if (!stopped && Relaunch(entry, index)) all = false;
      }
    } else {
      all = false;
    }
  }
  for (const auto& [index, child] : entry.relaunched) {
    absl::StatusOr<ProcessInfo> info = backends_.local->Info(child);
    if (info.ok() && info->state != ProcessState::kExited) all = false;
  }
  if (entry.record.state != JobState::kRunning) return;
  if (!all) return AdvanceAdopted(entry);
  entry.adopted.clear();
  if (entry.kill_timer) loop_.Cancel(entry.kill_timer);
  entry.kill_timer = 0;
  if (entry.record.cancel_requested) return Finish(entry, JobState::kCancelled, "cancelled by request");
  if (shutting_down_) return Finish(entry, JobState::kFailed, "stopped: the scheduler shut down while the job ran");
  if (!HasEventsFiles(entry.record)) {  // a group job from a launch that wrote none
    return Finish(entry, JobState::kLost,
                  "its processes ended after a scheduler restart had re-attached to them; their exit codes and final "
                  "evaluation were not visible to it");
  }
  if (!entry.adopted_failure.empty()) return Finish(entry, JobState::kFailed, entry.adopted_failure);
  FinishAdoptedFromEvents(entry);
}

void JobScheduler::FinishAdoptedFromEvents(Entry& entry) {
  JobRecord& r = entry.record;
  absl::StatusOr<JobSpec> spec = entry.spec ? absl::StatusOr<JobSpec>(*entry.spec) : ParseJobSpec(r.spec_yaml, r.base_dir);
  if (!spec.ok()) {
    return Finish(entry, JobState::kLost,
                  absl::StrCat("its processes ended after a scheduler restart, and its spec no longer parses to read "
                               "their events files: ", spec.status().message()));
  }
  const double wall = static_cast<double>(NowMs() - r.started_ms) / 1000;
  absl::StatusOr<RunReport> report = ReportFromEventsFiles(*spec, r.log_dir, wall);
  if (!report.ok()) {
    return Finish(entry, JobState::kFailed,
                  absl::StrCat("it ended after a scheduler restart: ", report.status().message()));
  }
  // Restarts under either daemon: the record follows each process's incarnation.
  for (const ProcessRecord& p : r.processes) {
    if (IsShard(p.role)) report->shard_restarts += p.incarnation;
    if (IsEvaluator(p.role)) report->evaluator_restarts += p.incarnation;
  }
  r.result_json = RunReportJson(*report, *spec);
  r.test_accuracy = report->test_accuracy;
  Finish(entry, JobState::kSucceeded,
         "ran to its end after a scheduler restart re-attached to it; the result is read from its learners' and "
         "evaluator's events files (exit codes: as the processes recorded them)");
}

absl::StatusOr<JobRecord> JobScheduler::Submit(const std::string& spec_yaml, const std::string& base_dir,
                                               int priority, const std::string& backend) {
  if (shutting_down_) return absl::UnavailableError("the scheduler is shutting down");
  if (base_dir.empty() || base_dir[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("base_dir: must be the absolute directory of the job file, got '", base_dir, "'"));
  }
  ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(spec_yaml, base_dir));
  if (!backend.empty()) {
    std::optional<BackendKind> kind = ParseBackendKind(backend);
    if (!kind) {
      return absl::InvalidArgumentError(
          absl::StrCat("backend: unknown backend '", backend, "' (expected local, mpi, slurm or kubernetes)"));
    }
    spec.backend = *kind;
  }
  if (spec.bind == Binding::kCores) {
    return absl::InvalidArgumentError(
        "bind: cores is for `orrery run`, which has the machine to itself; the scheduler's jobs share its "
        "cores and are not bound; use bind: none (for mpi jobs, orrery scheduler --mpirun-arg=--bind-to "
        "--mpirun-arg=core binds their ranks)");
  }
  switch (spec.backend) {
    case BackendKind::kLocal:
      if (backends_.local == nullptr) return absl::FailedPreconditionError("backend: this scheduler runs no local jobs");
      break;
    case BackendKind::kMpi:
      if (backends_.mpi == nullptr) return absl::FailedPreconditionError(absl::StrCat("backend: mpi: ", backends_.mpi_missing));
      break;
    case BackendKind::kSlurm:
      if (backends_.slurm == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat("backend: slurm: ", backends_.slurm_missing));
      }
      break;
    case BackendKind::kKubernetes:
      return absl::FailedPreconditionError(
          "backend: kubernetes jobs are not run by this scheduler: render them with `orrery render-k8s JOB.yaml` "
          "and apply them with kubectl (see docs/backends.md)");
  }
  // Slurm finds nodes for its jobs itself; local and mpi jobs run on this machine's cores.
  const int slots = spec.backend == BackendKind::kSlurm ? 0 : spec.servers + spec.learners;
  if (slots > options_.slots) {
    return absl::FailedPreconditionError(absl::StrCat("servers + learners: the job needs ", slots,
                                                      " slots but this scheduler has ", options_.slots,
                                                      " (orrery scheduler --slots)"));
  }
  // A local job that could not fit even in an idle machine is refused now rather than queued to
  // fail; one that fits waits until the running local jobs leave room for its estimate. JobRun
  // checks the memory available when it starts (and fails it then, saying why).
  JobNeed need{slots, 0};
  if (spec.backend == BackendKind::kLocal && options_.memory_bytes > 0) {
    need.memory_bytes = JobMemoryEstimate(spec).value_or(0);
    if (need.memory_bytes > options_.memory_bytes) {  // CheckMemory says why, with the model's figures
      return CheckMemory(spec, options_.memory_bytes, "this scheduler lends to jobs (orrery scheduler --memory)");
    }
  }
  JobRecord record;
  record.name = spec.name;
  record.spec_yaml = spec_yaml;
  record.base_dir = base_dir;
  record.priority = priority;
  record.slots = slots;
  record.backend = BackendKindName(spec.backend);
  record.state = JobState::kQueued;
  record.submitted_ms = NowMs();
  RETURN_IF_ERROR(store_.Insert(&record));
  const int64_t id = record.id;
  auto entry = std::make_unique<Entry>();
  entry->record = record;
  Entry& e = *jobs_.emplace(id, std::move(entry)).first->second;
  queue_.Push(id, priority, need);
  Changed(e);
  ScheduleSoon();
  return record;
}

absl::StatusOr<JobRecord> JobScheduler::Get(const std::string& job) const {
  const Entry* entry = Find(job);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("no job '", job, "'"));
  return entry->record;
}

std::vector<JobRecord> JobScheduler::List() const {
  std::vector<JobRecord> out;
  for (const auto& [id, entry] : jobs_) out.push_back(entry->record);
  return out;
}

absl::StatusOr<JobRecord> JobScheduler::Cancel(const std::string& job) {
  Entry* entry = Find(job);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("no job '", job, "'"));
  JobRecord& r = entry->record;
  switch (r.state) {
    case JobState::kQueued:
      queue_.Remove(r.id);
      r.cancel_requested = true;
      Finish(*entry, JobState::kCancelled, "cancelled while queued");
      return r;
    case JobState::kRunning:
      if (r.cancel_requested) return r;
      r.cancel_requested = true;
      Persist(*entry);
      Changed(*entry);
      if (entry->run) {
        entry->run->Cancel(absl::CancelledError("cancelled by request"), options_.stop_grace);
      } else {
        StopAdopted(*entry, [](const std::string&) { return true; }, options_.stop_grace);
      }
      return r;
    case JobState::kCancelled:
      return r;
    default:
      return absl::FailedPreconditionError(
          absl::StrCat("job ", r.id, " (", r.name, ") has already ended: ", JobStateName(r.state)));
  }
}

void JobScheduler::ScheduleSoon() {
  if (schedule_posted_) return;
  schedule_posted_ = true;
  loop_.Post(liveness_.Guard([this] {
    schedule_posted_ = false;
    Schedule();
  }));
}

void JobScheduler::Schedule() {
  if (shutting_down_) return;
  for (int64_t id : queue_.Admit()) StartJob(*jobs_.at(id));
}

void JobScheduler::StartJob(Entry& entry) {
  JobRecord& r = entry.record;
  const int64_t id = r.id;
  absl::StatusOr<JobSpec> spec = ParseJobSpec(r.spec_yaml, r.base_dir);
  if (!spec.ok()) {
    return Finish(entry, JobState::kFailed,
                  absl::StrCat("the spec no longer parses when its turn came: ", spec.status().message()));
  }
  r.state = JobState::kRunning;
  r.started_ms = NowMs();
  r.log_dir = (fs::path(options_.log_root) / absl::StrCat("job-", id)).string();
  r.boot_id = BootId();
  r.processes.clear();
  entry.backend = BackendFor(r.backend);
  Persist(entry, /*with_processes=*/true);
  Changed(entry);
  if (entry.backend == nullptr) {  // stored by a daemon that had the backend
    return Finish(entry, JobState::kFailed, absl::StrCat("backend: this scheduler has no ", r.backend, " backend"));
  }
  spec->backend = ParseBackendKind(r.backend).value_or(spec->backend);  // as submitted, override included
  entry.spec = *spec;
  auto on_started = [this, id](const std::vector<ProcessId>& ids, Backend&) { OnStarted(id, ids); };
  auto on_line = [this, id](const OutputLine& line, Backend&) { OnJobLine(id, line); };
  if (spec->backend != BackendKind::kLocal) {
    GroupRunOptions o;
    o.orrery_binary = options_.orrery_binary;
    o.log_dir = r.log_dir;
    o.role_prefix = RolePrefix(id);
    o.threads_per_learner = 1;  // a learner holds one slot
    o.on_started = on_started;
    o.on_line = on_line;
    entry.run = std::make_unique<GroupJobRun>(*std::move(spec), std::move(o), loop_, *entry.backend);
    entry.run->Start([this, id](absl::StatusOr<RunReport> result) { OnRunDone(id, std::move(result)); });
    return;
  }

  RunJobOptions o;
  o.orrery_binary = options_.orrery_binary;
  o.log_dir = r.log_dir;
  o.progress = false;
  o.threads_per_learner = 1;  // a learner holds one slot
  o.role_prefix = RolePrefix(id);
  o.on_started = on_started;
  o.on_line = on_line;
  entry.run = std::make_unique<JobRun>(*std::move(spec), std::move(o), loop_, *entry.backend);
  entry.run->Start([this, id](absl::StatusOr<RunReport> result) { OnRunDone(id, std::move(result)); });
}

void JobScheduler::OnStarted(int64_t id, const std::vector<ProcessId>& ids) {
  Entry& entry = *jobs_.at(id);
  const std::string prefix = RolePrefix(id);
  for (ProcessId pid : ids) {
    absl::StatusOr<ProcessInfo> info = entry.backend->Info(pid);
    if (!info.ok()) continue;
    ProcessRecord p;
    p.role = absl::StartsWith(info->role, prefix) ? info->role.substr(prefix.size()) : info->role;
    p.pid = info->pid;
    p.start_ticks = info->pid > 0 ? ProcessStartTicks(info->pid).value_or(0) : 0;
    p.incarnation = info->incarnation;
    if (entry.backend == backends_.local && (IsLearner(p.role) || IsEvaluator(p.role)) && info->relaunch) {
      p.relaunch = RelaunchJson(*info->relaunch);
    }
    entry.process_index[pid] = entry.record.processes.size();
    entry.record.processes.push_back(std::move(p));
    process_job_[{entry.backend, pid}] = id;
  }
  // A shard's restart argv (its address, resuming from its checkpoint) is set once it is ready,
  // which is before the learners start: store it as it stands by then.
  if (entry.backend == backends_.local && entry.spec && entry.spec->checkpoint) {
    for (const auto& [pid, index] : entry.process_index) {
      ProcessRecord& p = entry.record.processes[index];
      if (!IsShard(p.role)) continue;
      absl::StatusOr<ProcessInfo> info = entry.backend->Info(pid);
      if (info.ok() && info->relaunch) p.relaunch = RelaunchJson(*info->relaunch);
    }
  }
  Persist(entry, /*with_processes=*/true);
  Changed(entry);
}

void JobScheduler::OnJobLine(int64_t id, const OutputLine& line) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Entry& entry = *it->second;
  auto index = entry.process_index.find(line.id);
  if (index != entry.process_index.end()) {
    ProcessRecord& p = entry.record.processes[index->second];
    auto base_it = entry.incarnation_base.find(line.id);
    const int base = base_it == entry.incarnation_base.end() ? 0 : base_it->second;
    // Restarted, or (a rank of a launch) it announced its pid: follow its pid.
    if (p.incarnation != base + line.incarnation || (p.pid == 0 && p.exit.empty())) {
      absl::StatusOr<ProcessInfo> info = entry.backend->Info(line.id);
      if (info.ok() && info->pid > 0 && (info->pid != p.pid || base + info->incarnation != p.incarnation)) {
        p.pid = info->pid;
        p.start_ticks = ProcessStartTicks(info->pid).value_or(0);
        p.incarnation = base + info->incarnation;
        p.exit.clear();
        store_.PutProcess(id, p).IgnoreError();
        Changed(entry);
      }
    }
  }
  if (line_watches_.empty()) return;
  const std::string text = FormatLogLine(options_.now(), line);
  std::vector<std::function<void(const std::string&)>> watchers;
  for (const auto& [watch, w] : line_watches_) {
    if (w.job == id) watchers.push_back(w.line);
  }
  for (const auto& fn : watchers) fn(text);
}

void JobScheduler::OnProcessExit(const Backend* backend, const ProcessExit& exit) {
  auto job = process_job_.find({backend, exit.id});
  if (job == process_job_.end() || !exit.final()) return;
  auto it = jobs_.find(job->second);
  if (it == jobs_.end()) return;
  Entry& entry = *it->second;
  auto index = entry.process_index.find(exit.id);
  if (index == entry.process_index.end()) return;
  ProcessRecord& p = entry.record.processes[index->second];
  p.exit = exit.error.empty() ? exit.status.ToString() : absl::StrCat(exit.status.ToString(), " (", exit.error, ")");
  if (exit.stop_requested) absl::StrAppend(&p.exit, " (stop requested)");
  store_.PutProcess(entry.record.id, p).IgnoreError();
  Changed(entry);
  if (entry.run == nullptr && !entry.relaunched.empty()) OnAdoptedExit(entry.record.id);  // re-attached
}

void JobScheduler::OnRunDone(int64_t id, absl::StatusOr<RunReport> result) {
  Entry& entry = *jobs_.at(id);
  entry.run.reset();  // JobRun allows this from its own `done`
  if (result.ok()) {
    entry.record.result_json = RunReportJson(*result, *entry.spec);
    entry.record.test_accuracy = result->test_accuracy;
    return Finish(entry, JobState::kSucceeded, "");
  }
  if (entry.record.cancel_requested) return Finish(entry, JobState::kCancelled, "cancelled by request");
  if (shutting_down_) return Finish(entry, JobState::kFailed, "stopped: the scheduler shut down while the job ran");
  Finish(entry, JobState::kFailed, std::string(result.status().message()));
}

void JobScheduler::Finish(Entry& entry, JobState state, std::string reason) {
  JobRecord& r = entry.record;
  absl::Status allowed = CheckTransition(r.state, state);
  if (!allowed.ok()) {
    LOG(ERROR) << "job " << r.id << ": " << allowed;  // a bug of ours; keep the state it has
    return;
  }
  r.state = state;
  r.reason = std::move(reason);
  r.finished_ms = NowMs();
  queue_.Release(r.id);
  Persist(entry);
  Changed(entry);
  ScheduleSoon();
  MaybeShutdownDone();
}

SchedulerStats JobScheduler::Stats() const {
  SchedulerStats stats;
  for (JobState s : {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                     JobState::kCancelled, JobState::kLost}) {
    stats.jobs[s] = 0;
  }
  for (const auto& [id, entry] : jobs_) ++stats.jobs[entry->record.state];
  stats.queue_length = static_cast<int>(queue_.size());
  stats.slots_total = queue_.total_slots();
  stats.slots_used = queue_.used_slots();
  stats.memory_total = queue_.total_memory_bytes();
  stats.memory_used = queue_.used_memory_bytes();
  return stats;
}

absl::StatusOr<std::vector<std::string>> JobScheduler::ReadLogs(int64_t id, size_t tail) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", id));
  const std::string& dir = it->second->record.log_dir;
  std::vector<std::string> lines;
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) return lines;
  std::vector<fs::path> files;
  for (const auto& file : fs::directory_iterator(dir, ec)) {
    if (file.path().extension() == ".log") files.push_back(file.path());
  }
  std::sort(files.begin(), files.end());
  const bool reattached = it->second->record.reattached;
  for (const fs::path& file : files) {
    std::ifstream in(file);
    std::string line;
    const size_t first = lines.size();
    while (std::getline(in, line)) lines.push_back(std::move(line));
    if (!reattached) continue;
    // After a scheduler restart the process's stdout went nowhere; its tagged lines went on
    // into its events file. Those the log lacks are shown too, stamped with the events file's
    // last change (their own times were not kept) and marked "evt|".
    fs::path events = file;
    events.replace_extension(".events");
    std::ifstream ev(events);
    if (!ev) continue;
    std::vector<std::string> events_lines;
    while (std::getline(ev, line)) {
      if (!line.empty()) events_lines.push_back(std::move(line));
    }
    const std::vector<std::string> missing =
        EventsNotInLog(absl::MakeConstSpan(lines).subspan(first), events_lines);
    if (missing.empty()) continue;
    const auto changed = fs::last_write_time(events, ec);
    const absl::Time when =
        ec ? options_.now()
           : absl::FromChrono(std::chrono::time_point_cast<std::chrono::system_clock::duration>(
                 std::chrono::file_clock::to_sys(changed)));
    for (const std::string& text : missing) lines.push_back(FormatLogRecord(when, file.stem().string(), "evt", text));
  }
  // Each line starts with its UTC time (fixed width), and each file is in time order, so a stable
  // sort on the time merges the files.
  std::stable_sort(lines.begin(), lines.end(), [](const std::string& a, const std::string& b) {
    return a.compare(0, 24, b, 0, 24) < 0;
  });
  if (tail > 0 && lines.size() > tail) lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(tail));
  return lines;
}

WatchId JobScheduler::WatchLines(int64_t id, std::function<void(const std::string&)> line,
                                 std::function<void()> end) {
  const WatchId watch = next_watch_++;
  auto it = jobs_.find(id);
  if (it == jobs_.end() || IsTerminal(it->second->record.state)) {
    if (end) loop_.Post(liveness_.Guard(std::move(end)));
    return watch;
  }
  line_watches_[watch] = LineWatch{id, std::move(line), std::move(end)};
  return watch;
}

WatchId JobScheduler::WatchJobs(std::function<void(const JobRecord&)> changed) {
  const WatchId watch = next_watch_++;
  job_watches_[watch] = std::move(changed);
  return watch;
}

void JobScheduler::Unwatch(WatchId id) {
  line_watches_.erase(id);
  job_watches_.erase(id);
}

void JobScheduler::Shutdown(std::function<void()> done) {
  if (done) shutdown_done_.push_back(std::move(done));
  if (shutting_down_) {  // asked again: kill what is left now
    for (Backend* backend : {backends_.local, backends_.mpi, backends_.slurm}) {
      if (backend != nullptr) backend->StopAll(absl::ZeroDuration(), nullptr);
    }
    for (auto& [id, entry] : jobs_) {
      for (auto& [index, process] : entry->adopted) process->SignalGroup(SIGKILL).IgnoreError();
    }
    return;
  }
  shutting_down_ = true;
  for (auto& [id, entry] : jobs_) {
    if (entry->record.state != JobState::kRunning) continue;
    if (entry->run) {
      entry->run->Cancel(absl::CancelledError("the scheduler shut down"), options_.stop_grace);
    } else {
      StopAdopted(*entry, [](const std::string&) { return true; }, options_.stop_grace);
    }
  }
  MaybeShutdownDone();
}

void JobScheduler::MaybeShutdownDone() {
  if (!shutting_down_ || shutdown_done_.empty()) return;
  for (const auto& [id, entry] : jobs_) {
    if (entry->record.state == JobState::kRunning) return;
  }
  std::vector<std::function<void()>> callbacks;
  callbacks.swap(shutdown_done_);
  for (auto& callback : callbacks) loop_.Post(liveness_.Guard(std::move(callback)));
}

}  // namespace orrery::scheduler
