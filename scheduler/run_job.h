// `orrery run JOB.yaml`: one training job's processes — S parameter-server shards, L learners
// and an evaluator — supervised on this machine through the local backend, with live progress
// and a metrics report at the end. The scheduler daemon drives jobs through the same JobRun.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "learner/model_graph.h"
#include "scheduler/backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/job_spec.h"

namespace orrery::scheduler {

struct RunJobOptions {
  std::string orrery_binary;   // the executable to start for every role (normally /proc/self/exe)
  std::string log_dir;         // per-process logs go here (created); "" = no log files
  std::string host = "127.0.0.1";  // shards listen here, on ports the OS chooses
  absl::Duration timeout = absl::InfiniteDuration();  // the whole job; then it fails
  absl::Duration start_timeout = absl::Seconds(60);   // for the shards' READY lines
  int threads_per_learner = 0;  // 0: usable cores / learners (at least 1); bound: one per core
  // Cores the job's processes are bound to (orrery server/learner --cpus), one core each,
  // round-robin: shard s gets cpus[s % n], learner i cpus[(S + i) % n], the evaluator
  // cpus[(S + L) % n]. Empty: none bound, unless the spec says `bind: cores` and RunJob fills it
  // with the cores this process may use.
  std::vector<int> cpus;
  bool progress = true;         // live progress on stderr
  // Called on the loop thread with every output line of every process, and the backend running
  // them (for log streaming, and for fault tests that signal a process at a chosen moment).
  std::function<void(const OutputLine&, Backend&)> on_line;
  // Prepended to every role in the backend ("job7:" gives "job7:server-0") so that several runs
  // can share one backend; log files are named without it.
  std::string role_prefix;
  // Called on the loop thread right after each group of processes has started (the shards, then
  // the learners with the evaluator), with their ids in the backend (e.g. to record their pids).
  std::function<void(const std::vector<ProcessId>&, Backend&)> on_started;
  // Start the shards from the checkpoints in the spec's checkpoint.dir (orrery run --resume).
  bool resume = false;
  // A running shard that answers no health check (a Stats call) for this long fails the job as
  // stopped or hung, instead of leaving the learners waiting on it.
  absl::Duration shard_timeout = absl::Seconds(60);
};

// One evaluation of the pulled weights on the test set.
struct EvalPoint {
  double seconds = 0;          // since the learners were started
  double test_accuracy = 0;
  double test_loss = 0;
  uint64_t updates_applied = 0;
  uint64_t samples_applied = 0;
};

struct RunReport {
  std::string job;
  double test_accuracy = 0;
  double test_loss = 0;
  double wall_seconds = 0;       // from start to every process stopped
  double train_seconds = 0;      // from the learners' start to the last learner's exit
  uint64_t updates_applied = 0;  // weight updates (shard versions; the maximum over shards)
  uint64_t gradients_applied = 0;
  uint64_t gradients_rejected = 0;
  uint64_t samples_applied = 0;
  double images_per_second = 0;  // samples applied in this run / train_seconds
  // With --resume: the samples already applied in the checkpoints the shards started from (the
  // largest over shards); samples_applied counts them too, images_per_second does not.
  uint64_t samples_at_resume = 0;
  double staleness_mean = 0;
  uint64_t staleness_max = 0;
  // Bucket t: gradient applications with staleness t, summed over shards. Each shard measures
  // τ against its own version, so a gradient is counted once per shard (the sum is
  // gradients_applied × servers); means and tail shares are per gradient.
  std::vector<uint64_t> staleness_histogram;
  // Seconds from a shard's answer to a learner's pull to that learner's gradient arriving there
  // (server/staleness_stats.h), over every shard's gradients.
  double gradient_age_mean_seconds = 0;
  double gradient_age_max_seconds = 0;
  std::optional<double> time_to_target_seconds;  // first evaluation reaching target_accuracy
  int learners_finished = 0;
  int learners_failed = 0;
  int learners_evicted = 0;      // failed learners the runner removed from the shards' accounting
  int shard_restarts = 0;        // shards that died and came back from their checkpoint
  int evaluator_restarts = 0;    // times the evaluator died while the learners trained and came back
  // Updates a restarted shard lost (its version before the crash, as the learners last saw it,
  // minus the version of its checkpoint), summed over restarts: a lower bound, since learners see
  // a shard's version only when they pull.
  uint64_t updates_lost = 0;
  // Checkpoint writes the shards reported failed (ORRERY_SERVER_CHECKPOINT_FAILED), and the
  // last one's "server-<i>: <error>": while they fail, a dead shard would restart from an older
  // checkpoint (or none) and --resume would start from it.
  int checkpoint_failures = 0;
  std::string checkpoint_error;
  std::vector<std::string> learner_failures;  // "learner-2: killed by signal 9 (SIGKILL)"
  std::vector<EvalPoint> evals;
  // Summed over the learners that finished (their ORRERY_LEARNER_DONE lines): serialised Push
  // requests sent and Pull responses received, over all shards.
  uint64_t pushes = 0;
  uint64_t push_bytes = 0;
  uint64_t pulls = 0;
  uint64_t pull_bytes = 0;
  // Summed likewise: pushes after which a learner closed its connections because a shard had
  // stopped reading what it sent (WireStats::connection_resets).
  uint64_t connection_resets = 0;
  // Summed likewise: the learners' wall time inside Pull, computing a step (with a straggler's
  // stretch), and inside Push. Where a learner's cycle goes; with the staleness it says whether
  // a gradient's pull-to-push window spans the cycle (see bench/experiments).
  double learner_pull_seconds = 0;
  double learner_compute_seconds = 0;
  double learner_push_seconds = 0;
};

// A job's run on a loop and backend that the caller owns and may share with other runs, as the
// scheduler daemon drives it: JobRun (the local backend, role by role) or GroupJobRun
// (group_job_run.h: mpirun or Slurm, the whole job as one launch). Threads: construct, call and
// destroy on the loop's thread. Destroying a run that has not finished drops `done` and leaves
// its processes to the backend.
class JobRunner {
 public:
  // Called once with the report, or with the reason the job failed.
  using Done = std::function<void(absl::StatusOr<RunReport>)>;

  virtual ~JobRunner() = default;
  // Starts the job's processes and returns at once. `done` runs later on the loop thread, after
  // every process of the job has exited (never inside this call).
  virtual void Start(Done done) = 0;
  // Fails the run with `why`: each process gets SIGTERM (or the launcher's equivalent), then
  // SIGKILL after `grace`. No-op once finishing.
  virtual void Cancel(absl::Status why, absl::Duration grace) = 0;
  virtual bool finished() const = 0;
  // The ids in the backend of every process started so far.
  virtual std::vector<ProcessId> processes() const = 0;
};

// The asynchronous form of RunJob: the shards first, then the learners and the evaluator when
// every shard is ready; shard health checks, learner evictions and shard restarts as RunJob.
class JobRun final : public JobRunner {
 public:
  // `loop` and `backend` are borrowed and must outlive the run.
  JobRun(JobSpec job, RunJobOptions options, EventLoop& loop, Backend& backend);
  ~JobRun() override;
  JobRun(const JobRun&) = delete;
  JobRun& operator=(const JobRun&) = delete;

  void Start(Done done) override;
  void Cancel(absl::Status why, absl::Duration grace) override;
  bool finished() const override;
  std::vector<ProcessId> processes() const override;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs `job` to the end on its own loop and local backend. Returns the report, or the reason the
// job failed: a shard that could not start or died (with its last lines), every learner failed,
// the evaluator failed, the timeout, or CANCELLED after SIGINT/SIGTERM. Every process is stopped
// before it returns. Must be called from the main thread before other threads exist (it takes
// over SIGINT, SIGTERM and SIGCHLD). When a signal stopped the job and `stopped_by` is given,
// it is set to that signal (for the shell's exit code 128 + signal).
absl::StatusOr<RunReport> RunJob(const JobSpec& job, const RunJobOptions& options, int* stopped_by = nullptr);

// The report as JSON (metrics for --metrics-out), with the job's settings under "job".
std::string RunReportJson(const RunReport& report, const JobSpec& job);

// What each process of a local job costs its supervisor in open files: the read ends of its
// stdout and stderr pipes, its log file and, for a shard, the health-check connection.
inline constexpr int kOpenFilesPerProcess = 4;

// OK when the job's processes fit this process's open-file limit (RLIMIT_NOFILE); otherwise a
// RESOURCE_EXHAUSTED error saying how many it needs. JobRun checks it before starting anything.
absl::Status CheckOpenFileLimit(const JobSpec& job);

// OK when the job's processes fit in `limit_bytes` by the estimate JobMemoryBytes; otherwise
// RESOURCE_EXHAUSTED saying how much it needs, against "the <limit> <limit_what>" (for example
// "this machine has available"). A model spec that does not load is left to the learners to
// report (OK here).
absl::Status CheckMemory(const JobSpec& job, int64_t limit_bytes, std::string_view limit_what);
// CheckMemory against this machine's available memory (/proc/meminfo's MemAvailable; OK when it
// cannot be read). JobRun checks it before starting anything: past it the kernel's OOM killer
// would end some process of the job (or of someone else) midway.
absl::Status CheckMemoryAvailable(const JobSpec& job);
// The estimate JobMemoryBytes for the job's model; nullopt when its model spec does not load.
// The scheduler daemon holds it for a running local job, beside its slots.
std::optional<int64_t> JobMemoryEstimate(const JobSpec& job);

// About what a local job's processes hold, for a model of W bytes of fp32 weights and A values
// of activations per sample: every learner and the evaluator 3 W (weights, gradients, transfer
// buffers; measured 2.9 W with a 785M-parameter model) plus 160 MiB (data, runtime), plus
// 16 A bytes per sample of its batch (a learner's batch, the evaluator's 256: outputs, their
// gradients and oneDNN's workspaces; measured 15.4 A with cnn.yaml at batch 4096); the shards
// together 3 W (weights, momentum, gradient sums; 2.0 W measured without momentum) plus 48 MiB
// each.
int64_t JobMemoryBytes(const JobSpec& job, const learner::ModelFootprint& model);

// The command lines the job's processes run (exposed for tests and for other backends).
// With a checkpoint in the spec the shard keeps it; `resume` starts it from the checkpoint.
std::vector<std::string> ServerArgv(const JobSpec& job, const std::string& binary, int shard,
                                    const std::string& listen, bool resume = false);
std::vector<std::string> LearnerArgv(const JobSpec& job, const std::string& binary, int index,
                                     const std::vector<std::string>& servers, int threads);
std::vector<std::string> EvaluatorArgv(const JobSpec& job, const std::string& binary,
                                       const std::vector<std::string>& servers, int threads);

}  // namespace orrery::scheduler
