// The `slurm` backend: a job's processes as the tasks of one `srun` step inside a batch job that
// `sbatch` submits. Every process of a StartGroup is one task, in order; `orrery slurm-rank`
// tasks find each other through files in the launch's directory (cli/rank_main.h), and
// SlurmJobProcesses builds their specs. Output comes from per-task files (srun --output/--error
// with %t), state from `squeue` (then `scontrol show job` or `sacct` for the end), cancel is
// `scancel`. Every Slurm command runs as a child process on the event loop.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "scheduler/backends/command_runner.h"
#include "scheduler/backends/group_backend.h"
#include "scheduler/backends/job_ranks.h"
#include "scheduler/job_spec.h"
#include "scheduler/liveness.h"

namespace orrery::scheduler {

// A launch lives in its own directory under `work_dir` (which every node must see: a shared
// filesystem on a real cluster): batch.sh, batch.out (the batch script's own output), task-R.out
// and task-R.err, `exit` (srun's exit code, written by the script) and rendezvous/ (exported to
// the tasks as ORRERY_RENDEZVOUS). Tasks share one environment, given to sbatch (which exports it
// to the job), so no secret is written to the script.
//
// StartGroup returns once the directory and script are written; sbatch runs in the background.
// If Slurm refuses the job, every rank exits with sbatch's status and `error` set. Stopping a
// launch runs `scancel` (Slurm sends SIGTERM, then SIGKILL after its KillWait), and after the
// grace period `scancel --signal=KILL --full`. Semantics shared with mpirun: group_backend.h.
//
// Threads: as GroupBackend (the loop's thread only).
class SlurmBackend final : public GroupBackend {
 public:
  struct Options {
    std::string work_dir;                    // required
    std::vector<std::string> sbatch_args;    // e.g. {"--partition=debug", "--time=60"}
    std::vector<std::string> srun_args;      // e.g. {"--cpu-bind=none"}
    std::map<std::string, std::string> env;  // for every Slurm command (SLURM_CONF, ...)
    std::string bin_dir;                     // where sbatch, squeue, ... are; "" = PATH
    absl::Duration poll_interval = absl::Milliseconds(500);  // reading the output files
    absl::Duration squeue_interval = absl::Seconds(2);
    absl::Duration command_timeout = absl::Seconds(60);
    bool cancel_on_destroy = true;  // scancel launches still in Slurm when the backend is destroyed
    LocalBackend::Options commands;
    GroupBackend::Options group;
  };

  // Slurm's view of a launch: the job id and its last squeue state ("PENDING", "RUNNING", ...,
  // then the final JobState from scontrol/sacct, e.g. "COMPLETED", "CANCELLED").
  struct JobState {
    std::string job_id;  // "" until sbatch has answered
    std::string state;
    std::string reason;  // squeue's %r (why it is pending)
    std::string dir;     // the launch's directory
  };

  // `loop` is borrowed and must outlive the backend.
  SlurmBackend(EventLoop& loop, Options options);
  ~SlurmBackend() override;

  // The launch that runs `id`. NOT_FOUND for an unknown id.
  absl::StatusOr<JobState> SlurmJob(ProcessId id) const;

  // The batch script for `specs` writing into `dir` (exposed for tests and deploy/ examples).
  // INVALID_ARGUMENT when the ranks' environments or working directories differ, or when
  // distinct command lines hold characters srun's --multi-prog cannot carry.
  absl::StatusOr<std::string> BatchScript(const std::vector<ProcessSpec>& specs, const std::string& dir) const;

 protected:
  absl::Status Launch(GroupId group, const std::vector<ProcessSpec>& specs) override;
  void StopGroup(GroupId group, absl::Duration grace) override;

 private:
  struct Submission;
  struct TailFile;

  std::string Tool(const std::string& name) const;
  std::map<std::string, std::string> ToolEnv() const;
  void Submitted(GroupId group, CommandResult result);
  void Poll(GroupId group);
  void QueryQueue(GroupId group);
  void Finished(GroupId group);
  // `error`: why the job never ran (sbatch refused it); "" otherwise.
  void Conclude(GroupId group, std::optional<ExitStatus> status, const std::string& final_state,
                const std::string& error = "");
  void ReadOutput(GroupId group, bool final);
  void Cancel(GroupId group, bool kill);

  Options options_;
  CommandRunner commands_;
  std::map<GroupId, std::unique_ptr<Submission>> launches_;
  Liveness liveness_;
};

// What to start for `job` under Slurm: S + L + 1 specs, one per task (roles server-i,
// learner-i, evaluator, each `role_prefix` + role), all running `<binary> slurm-rank <job_file>`.
// `job_file` must hold `job` (WriteJobSpecFile) on a filesystem every node sees.
using SlurmJobOptions = RankJobOptions;
std::vector<ProcessSpec> SlurmJobProcesses(const JobSpec& job, const SlurmJobOptions& options);

}  // namespace orrery::scheduler
