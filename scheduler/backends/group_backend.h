// The machinery shared by backends that launch a group of processes as one unit through a
// launcher — `mpirun` (MpiBackend), `sbatch` + `srun` (SlurmBackend): each ProcessSpec of a
// StartGroup becomes one rank of one launch, in order. This class keeps the per-process view
// the Backend interface promises (roles, lines, exits, logs, tails); subclasses launch, stream
// and stop.
//
// Semantics that differ from the local backend, because a launcher runs its ranks together:
//  - Exits are reported when the launch ends (mpirun exits, the Slurm job leaves the queue), for
//    every rank at once, in rank order. A rank's exit code is the one it announced with a line
//    `ORRERY_RANK_EXIT {"code":C,...}` (as `orrery mpi-rank`/`slurm-rank` print); a rank that
//    announced none gets the launcher's status.
//  - Ranks are never restarted: a ProcessSpec's restart policy is noted in the log and ignored.
//  - Signal and Stop reach one rank only when it announced its pid with
//    `ORRERY_RANK {"pid":P,"host":H,...}` and runs on this host; otherwise Stop stops the whole
//    launch and Signal fails with FAILED_PRECONDITION. (Under mpirun a rank that dies ends the
//    launch anyway.)
//  - The launcher's own output (mpirun's messages, the batch script's) is a "sys|" note in every
//    rank's log and tail, and is not delivered to line listeners.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "scheduler/backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/liveness.h"

namespace orrery::scheduler {

// Threads: not thread-safe; construct, call and destroy on the EventLoop's thread, where every
// callback runs.
class GroupBackend : public Backend {
 public:
  struct Options {
    size_t tail_lines = 200;  // lines kept per process for Tail()
    std::function<absl::Time()> now = [] { return absl::Now(); };  // timestamps in log files
  };

  ~GroupBackend() override;

  // A group of one.
  absl::StatusOr<ProcessId> Start(const ProcessSpec& spec) override;
  // One launch; rank r runs specs[r]. Errors: INVALID_ARGUMENT (empty, duplicate or existing
  // roles, empty argv, specs the launcher cannot express), FAILED_PRECONDITION after StopAll, the
  // launcher's error; nothing is left running then.
  absl::StatusOr<std::vector<ProcessId>> StartGroup(const std::vector<ProcessSpec>& specs) override;
  // Recorded only: ranks are not restarted.
  absl::Status SetRestartArgv(ProcessId id, std::vector<std::string> argv) override;
  absl::Status Signal(ProcessId id, int signal) override;
  absl::Status Stop(ProcessId id, absl::Duration grace) override;
  void StopAll(absl::Duration grace, std::function<void()> done) override;

  absl::StatusOr<ProcessInfo> Info(ProcessId id) const override;
  std::optional<ProcessId> Find(const std::string& role) const override;
  std::vector<ProcessInfo> List() const override;
  bool AllExited() const override;
  std::vector<std::string> Tail(ProcessId id, size_t n) const override;

 protected:
  using GroupId = int64_t;

  GroupBackend(EventLoop& loop, Options options);
  EventLoop& loop() { return loop_; }

  // Launches group `group`: rank r runs specs[r] (validated: non-empty, unique roles, argv set).
  // On error nothing of it may be left running.
  virtual absl::Status Launch(GroupId group, const std::vector<ProcessSpec>& specs) = 0;
  // Stops every rank of a running group: politely now, forcibly after `grace`. Must lead to
  // GroupEnded. Called at most once per group.
  virtual void StopGroup(GroupId group, absl::Duration grace) = 0;

  // For subclasses, on the loop thread. A line of rank `rank` of `group`.
  void RankLine(GroupId group, int rank, Stream stream, std::string text);
  // A line of the launcher itself: a note on every rank of the group.
  void LauncherLine(GroupId group, const std::string& text);
  // The launch has ended with `launcher` (mpirun's exit status, the Slurm job's): reports every
  // rank's exit; `error` (e.g. why the launcher refused the job) goes in each ProcessExit. Later
  // calls for the group are ignored.
  void GroupEnded(GroupId group, const ExitStatus& launcher, const std::string& error = "");
  // The roles of a group's ranks, in rank order.
  std::vector<std::string> GroupRoles(GroupId group) const;
  bool GroupRunning(GroupId group) const;

 private:
  struct Proc;
  struct Group;

  Proc* Lookup(ProcessId id) const;
  Group* LookupGroup(GroupId id) const;
  void Note(Proc& proc, const std::string& text);
  void AppendToLog(Proc& proc, const std::string& tag, const std::string& text);
  bool LocalRank(const Proc& proc) const;
  void StopWholeGroup(Group& group, absl::Duration grace);
  // GroupEnded's work: waits (briefly) for ranks on this host to be gone, then reports the exits.
  void ReportEnded(GroupId gid, const ExitStatus& launcher, const std::string& error);
  void MaybeReportStopped();

  EventLoop& loop_;
  Options options_;
  std::string hostname_;
  std::map<ProcessId, std::unique_ptr<Proc>> procs_;
  std::map<GroupId, std::unique_ptr<Group>> groups_;
  ProcessId next_id_ = 1;
  GroupId next_group_ = 1;
  bool stopping_all_ = false;
  std::vector<std::function<void()>> stopped_callbacks_;
  Liveness liveness_;
};

}  // namespace orrery::scheduler
