// The `mpi` backend: a job's processes as the ranks of one `mpirun` command, started and
// supervised as a child of this process (through the local backend). Every process of a
// StartGroup is one rank, in order; `orrery mpi-rank` ranks find each other with MPI_Allgather
// (see cli/rank_main.h), and MpiJobProcesses builds their specs.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "scheduler/backends/group_backend.h"
#include "scheduler/backends/job_ranks.h"
#include "scheduler/backends/local_backend.h"
#include "scheduler/job_spec.h"

namespace orrery::scheduler {

// Runs `mpirun --tag-output [--allow-run-as-root] [--oversubscribe] ARGS... -x VAR... -np N argv`
// (or, when the ranks' command lines differ, one `-np 1 argv` app context per rank joined by
// `:`). Output lines are routed to their rank by mpirun's `[job,rank]<stdout>:` tags. Every rank
// of one launch must share one environment and working directory (mpirun gets them; `-x` exports
// each variable to the ranks). Stopping a launch sends SIGTERM to mpirun, which forwards it to
// every rank and kills the ranks that remain; after the grace period, mpirun and every process
// it started on this machine get SIGKILL. Semantics shared with Slurm: see group_backend.h.
//
// Threads: as GroupBackend (the loop's thread only).
class MpiBackend final : public GroupBackend {
 public:
  struct Options {
    std::string mpirun = "mpirun";        // a path, or a name looked up in PATH
    std::vector<std::string> extra_args;  // e.g. {"--hostfile", "hosts"}
    bool oversubscribe = true;            // more ranks than cores (a job's shards mostly wait)
    // Added when running as root, which OpenMPI otherwise refuses.
    bool allow_run_as_root = true;
    LocalBackend::Options launcher;       // for the mpirun child (kill_with_parent, ...)
    GroupBackend::Options group;
  };

  // `loop` is borrowed and must outlive the backend.
  explicit MpiBackend(EventLoop& loop);
  MpiBackend(EventLoop& loop, Options options);
  ~MpiBackend() override;

  // The mpirun command line a launch of `specs` runs (exposed for tests and for
  // deploy/mpirun examples). INVALID_ARGUMENT when the ranks' environments or working
  // directories differ.
  absl::StatusOr<std::vector<std::string>> MpirunArgv(const std::vector<ProcessSpec>& specs) const;

 protected:
  absl::Status Launch(GroupId group, const std::vector<ProcessSpec>& specs) override;
  void StopGroup(GroupId group, absl::Duration grace) override;

 private:
  void OnLauncherLine(const OutputLine& line);
  void OnLauncherExit(const ProcessExit& exit);

  Options options_;
  LocalBackend launcher_;
  std::map<ProcessId, GroupId> group_of_;   // mpirun process in launcher_ -> group
  std::map<GroupId, ProcessId> mpirun_of_;
  std::map<GroupId, TimerId> kill_timers_;
};

// What to start for `job` under mpirun: S + L + 1 specs, one per rank (roles server-i,
// learner-i, evaluator, each `role_prefix` + role), all running
// `<binary> mpi-rank <job_file>`. `job_file` must hold `job` (WriteJobSpecFile) where every node
// can read it. The token goes in the environment (ORRERY_TOKEN), never on a command line.
using MpiJobOptions = RankJobOptions;
std::vector<ProcessSpec> MpiJobProcesses(const JobSpec& job, const MpiJobOptions& options);

}  // namespace orrery::scheduler
