// A job launched as one unit by a launcher backend — every rank of one `mpirun` (MpiBackend) or
// one Slurm batch job (SlurmBackend) — as the scheduler daemon runs it. The ranks find each other
// themselves (`orrery mpi-rank` / `orrery slurm-rank`, cli/rank_main.h), so this run only starts
// the launch, follows its lines into the job's report and collects every rank's exit.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "scheduler/backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/job_spec.h"
#include "scheduler/liveness.h"
#include "scheduler/run_job.h"

namespace orrery::scheduler {

struct GroupRunOptions {
  std::string orrery_binary;  // the same path on every node
  // Required: the job file the ranks read (job.yaml) and their per-role logs go here; every node
  // must see it (a shared filesystem on a real cluster).
  std::string log_dir;
  std::string role_prefix;      // as RunJobOptions::role_prefix
  int threads_per_learner = 1;  // 0: the ranks divide their host's cores
  // As in RunJobOptions.
  std::function<void(const OutputLine&, Backend&)> on_line;
  std::function<void(const std::vector<ProcessId>&, Backend&)> on_started;
};

// `backend` must be the launcher backend for `job.backend` (an MpiBackend for kMpi, a
// SlurmBackend for kSlurm). The job succeeds when the shards and the evaluator exit with 0, at
// least one learner finished, and the evaluator printed its final evaluation; a learner that
// failed is reported in the result (the ranks go on without it). Threads: as JobRunner.
class GroupJobRun final : public JobRunner {
 public:
  GroupJobRun(JobSpec job, GroupRunOptions options, EventLoop& loop, Backend& backend);
  ~GroupJobRun() override;
  GroupJobRun(const GroupJobRun&) = delete;
  GroupJobRun& operator=(const GroupJobRun&) = delete;

  void Start(Done done) override;
  void Cancel(absl::Status why, absl::Duration grace) override;
  bool finished() const override { return finished_; }
  std::vector<ProcessId> processes() const override { return ids_; }

 private:
  void OnLine(const OutputLine& line);
  void OnExit(const ProcessExit& exit);
  void FinishSoon(absl::Status failure);
  void Finish();
  double Seconds() const;

  const JobSpec job_;
  const GroupRunOptions options_;
  EventLoop& loop_;
  Backend& backend_;
  ListenerId line_listener_ = 0;
  ListenerId exit_listener_ = 0;
  Done done_;
  absl::Time start_ = absl::Now();
  std::vector<ProcessId> ids_;
  std::map<ProcessId, std::string> role_of_;  // without the prefix
  std::map<ProcessId, ProcessExit> exits_;
  std::map<ProcessId, nlohmann::json> learner_done_;
  std::optional<nlohmann::json> final_eval_;
  absl::Status failure_;  // a cancel, or a launch that could not start
  bool finishing_ = false;
  bool finished_ = false;
  RunReport report_;
  Liveness liveness_;
};

}  // namespace orrery::scheduler
