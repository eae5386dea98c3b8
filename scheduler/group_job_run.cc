#include "scheduler/group_job_run.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/random_token.h"
#include "scheduler/backends/job_ranks.h"
#include "scheduler/backends/job_spec_yaml.h"
#include "scheduler/backends/mpi_backend.h"
#include "scheduler/backends/slurm_backend.h"
#include "scheduler/job_report.h"

namespace orrery::scheduler {

GroupJobRun::GroupJobRun(JobSpec job, GroupRunOptions options, EventLoop& loop, Backend& backend)
    : job_(std::move(job)), options_(std::move(options)), loop_(loop), backend_(backend) {}

GroupJobRun::~GroupJobRun() {
  liveness_.Close();
  backend_.RemoveListener(line_listener_);
  backend_.RemoveListener(exit_listener_);
}

double GroupJobRun::Seconds() const { return absl::ToDoubleSeconds(absl::Now() - start_); }

void GroupJobRun::Start(Done done) {
  done_ = std::move(done);
  report_.job = job_.name;
  start_ = absl::Now();
  line_listener_ = backend_.AddLineListener([this](const OutputLine& line) {
    if (role_of_.count(line.id) != 0) OnLine(line);
  });
  exit_listener_ = backend_.AddExitListener([this](const ProcessExit& exit) {
    if (role_of_.count(exit.id) != 0) OnExit(exit);
  });
  if (job_.backend != BackendKind::kMpi && job_.backend != BackendKind::kSlurm) {
    return FinishSoon(absl::InvalidArgumentError(
        absl::StrCat("backend: ", BackendKindName(job_.backend), " jobs are not launched as one group")));
  }
  if (options_.log_dir.empty()) return FinishSoon(absl::InvalidArgumentError("no directory for the job file"));
  const std::string job_file = absl::StrCat(options_.log_dir, "/job.yaml");
  std::error_code ec;
  std::filesystem::create_directories(options_.log_dir, ec);
  if (absl::Status st = WriteJobSpecFile(job_, job_file); !st.ok()) return FinishSoon(st);

  RankJobOptions o;
  o.binary = options_.orrery_binary;
  o.job_file = job_file;
  o.token = RandomToken();  // in the ranks' environment, never on a command line
  o.log_dir = options_.log_dir;
  o.role_prefix = options_.role_prefix;
  o.threads_per_learner = options_.threads_per_learner;
  const std::vector<ProcessSpec> specs =
      job_.backend == BackendKind::kMpi ? MpiJobProcesses(job_, o) : SlurmJobProcesses(job_, o);
  absl::StatusOr<std::vector<ProcessId>> ids = backend_.StartGroup(specs);
  if (!ids.ok()) {
    return FinishSoon(absl::Status(ids.status().code(), absl::StrCat("starting the job under ",
                                                                      BackendKindName(job_.backend), ": ",
                                                                      ids.status().message())));
  }
  ids_ = *ids;
  const std::vector<RankRole> ranks = JobRanks(job_);
  for (size_t r = 0; r < ids_.size() && r < ranks.size(); ++r) role_of_[ids_[r]] = ranks[r].name;
  if (options_.on_started) options_.on_started(ids_, backend_);
}

void GroupJobRun::OnLine(const OutputLine& line) {
  if (options_.on_line) options_.on_line(line, backend_);
  std::string tag;
  nlohmann::json body;
  if (!ParseTagged(line.text, &tag, &body)) return;
  const std::string& role = role_of_.at(line.id);
  if (tag == "ORRERY_EVAL" && role == "evaluator") {
    const EvalPoint p = ParseEvalPoint(body, Seconds());
    report_.evals.push_back(p);
    if (job_.target_accuracy && !report_.time_to_target_seconds && p.test_accuracy >= *job_.target_accuracy) {
      report_.time_to_target_seconds = p.seconds;
    }
    if (JsonGet<bool>(body, "final", false)) final_eval_ = body;
  } else if (tag == "ORRERY_LEARNER_DONE" && absl::StartsWith(role, "learner-")) {
    learner_done_[line.id] = body;
  }
}

void GroupJobRun::OnExit(const ProcessExit& exit) {
  if (!exit.final()) return;  // ranks are never restarted; kept for the interface's sake
  exits_[exit.id] = exit;
  if (exits_.size() == ids_.size()) FinishSoon(absl::OkStatus());
}

void GroupJobRun::Cancel(absl::Status why, absl::Duration grace) {
  if (finishing_) return;
  if (failure_.ok()) failure_ = std::move(why);
  for (ProcessId id : ids_) {
    if (exits_.count(id) == 0) backend_.Stop(id, grace).IgnoreError();
  }
  if (ids_.empty()) FinishSoon(absl::OkStatus());
}

// Finishes on a later loop turn: `done` may destroy this run, which must not happen inside a
// backend callback or inside Start.
void GroupJobRun::FinishSoon(absl::Status failure) {
  if (finishing_) return;
  if (failure_.ok() && !failure.ok()) failure_ = std::move(failure);
  finishing_ = true;
  loop_.Post(liveness_.Guard([this] { Finish(); }));
}

void GroupJobRun::Finish() {
  finished_ = true;
  Done done = std::move(done_);
  done_ = nullptr;
  if (!failure_.ok()) return done(failure_);
  report_.wall_seconds = Seconds();
  // The shards and the evaluator must all have made it; learners may fail one by one.
  for (ProcessId id : ids_) {
    const ProcessExit& exit = exits_.at(id);
    const std::string& role = role_of_.at(id);
    const std::string why = absl::StrCat(role, ": ", exit.status.ToString(),
                                         exit.error.empty() ? "" : absl::StrCat(" (", exit.error, ")"));
    if (absl::StartsWith(role, "learner-")) {
      if (exit.status.ok()) {
        ++report_.learners_finished;
        if (auto it = learner_done_.find(id); it != learner_done_.end()) AddLearnerTraffic(it->second, &report_);
      } else {
        ++report_.learners_failed;
        report_.learner_failures.push_back(why);
      }
      continue;
    }
    if (!exit.status.ok()) {
      return done(absl::AbortedError(absl::StrCat(why, LastLines(backend_, id, 10))));
    }
  }
  if (report_.learners_finished == 0) {
    return done(absl::AbortedError(absl::StrCat("every learner failed; ", report_.learner_failures.front(),
                                                LastLines(backend_, ids_[job_.servers], 10))));
  }
  if (!final_eval_) {
    return done(absl::InternalError(absl::StrCat(
        "the job's ranks exited without the evaluator's final evaluation",
        LastLines(backend_, ids_.back(), 10))));
  }
  FillFromFinalEval(*final_eval_, &report_);
  // The ranks start together: training time is the launch's, start-up included.
  report_.train_seconds = report_.evals.empty() ? report_.wall_seconds : report_.evals.back().seconds;
  report_.images_per_second = report_.samples_applied / std::max(report_.train_seconds, 1e-9);
  done(report_);  // may destroy this run: nothing after it
}

}  // namespace orrery::scheduler
