// The scheduler daemon's core, with no network in it: accepts jobs, stores them, queues them for
// resource slots, runs them with JobRun on a shared backend, follows their processes, and after a
// restart recovers every stored job, re-attaching to processes that outlived the previous daemon.
// The gRPC JobService (job_service.h) is a thin adapter over it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scheduler/backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/job_queue.h"
#include "scheduler/job_store.h"
#include "scheduler/liveness.h"

namespace orrery::scheduler {

struct RunReport;

struct SchedulerOptions {
  int slots = 1;               // cores this machine lends to jobs; a job holds servers + learners
  // Memory this machine lends to local jobs; a running local job holds the estimate of its
  // processes' memory (JobMemoryEstimate) and later ones wait until theirs fits. 0: not counted.
  int64_t memory_bytes = 0;
  std::string orrery_binary;   // started for every role of every job
  std::string log_root;        // job N logs to <log_root>/job-N/<role>.log
  absl::Duration stop_grace = absl::Seconds(10);  // SIGTERM → SIGKILL when cancelling
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

// The backends a scheduler runs jobs on, by the spec's `backend:`; borrowed. A null one is
// refused at submit with `*_missing` as the reason.
struct SchedulerBackends {
  Backend* local = nullptr;
  Backend* mpi = nullptr;    // an MpiBackend
  Backend* slurm = nullptr;  // a SlurmBackend
  std::string mpi_missing = "this scheduler has no mpi backend";
  std::string slurm_missing = "this scheduler has no slurm backend";
};

struct SchedulerStats {
  std::map<JobState, int> jobs;  // every state present, zero or not
  int queue_length = 0;
  int slots_total = 0;
  int slots_used = 0;
  int64_t memory_total = 0;  // 0: memory not counted
  int64_t memory_used = 0;
};

using WatchId = int64_t;

// Threads: not thread-safe. Construct, call and destroy it on the loop's thread; every callback
// runs there. `loop`, the backends and `store` are borrowed and must outlive it. Store writes block
// the loop for the disk; a failed write is logged and the in-memory state goes on.
class JobScheduler {
 public:
  JobScheduler(EventLoop& loop, SchedulerBackends backends, JobStore& store, SchedulerOptions options);
  // Local jobs only.
  JobScheduler(EventLoop& loop, Backend& local, JobStore& store, SchedulerOptions options);
  ~JobScheduler();
  JobScheduler(const JobScheduler&) = delete;
  JobScheduler& operator=(const JobScheduler&) = delete;

  // Loads the store, once, before anything else: queued jobs queue again in their order; a running
  // job whose processes all still run (same pid and start time, same boot) is re-attached (it
  // stays running, holds its slots, can be cancelled, but its output and exit codes are no longer
  // visible, so it ends lost); one that lost any process is marked lost with the reason and its
  // survivors are killed. Then starts what fits.
  absl::Status Recover();

  // Validates `spec_yaml` (relative paths resolve against `base_dir`, which must be absolute),
  // stores the job and queues it; it starts on a later loop turn if it fits. INVALID_ARGUMENT
  // naming the key at fault, FAILED_PRECONDITION (more slots than the scheduler has, a backend it
  // cannot run) or RESOURCE_EXHAUSTED (a local job needing more memory than the scheduler lends);
  // nothing is stored then. Local and mpi jobs hold servers + learners slots of this machine, and
  // local jobs their memory estimate too; slurm jobs hold none (Slurm queues them for its own
  // nodes).
  // A non-empty `backend` ("mpi") overrides the spec's `backend:`.
  absl::StatusOr<JobRecord> Submit(const std::string& spec_yaml, const std::string& base_dir, int priority,
                                   const std::string& backend = "");

  // `job` is an id ("7") or a name (the latest job of that name). NOT_FOUND if none.
  absl::StatusOr<JobRecord> Get(const std::string& job) const;
  std::vector<JobRecord> List() const;  // by id
  // A queued job is cancelled at once; a running one is asked to stop (it ends cancelled when its
  // processes have exited). FAILED_PRECONDITION if it has already ended otherwise.
  absl::StatusOr<JobRecord> Cancel(const std::string& job);
  // 1 = starts next; 0 = not queued.
  int QueuePosition(int64_t id) const { return queue_.Position(id); }
  // Why a queued job waits (JobQueue::WaitingFor); "" when it is not queued.
  std::string WaitingFor(int64_t id) const { return queue_.WaitingFor(id); }
  SchedulerStats Stats() const;

  // The job's stored log lines (every process's log file, merged in time order), the last `tail`
  // when tail > 0.
  absl::StatusOr<std::vector<std::string>> ReadLogs(int64_t id, size_t tail) const;

  // Live log lines of job `id`, formatted as in its log files, from now on; `end` runs once when
  // the job has ended (at once, posted, if it already has). Unwatch to stop earlier.
  WatchId WatchLines(int64_t id, std::function<void(const std::string&)> line, std::function<void()> end);
  // Every later change of any job (state, cancel request, processes).
  WatchId WatchJobs(std::function<void(const JobRecord&)> changed);
  void Unwatch(WatchId id);

  // Refuses new work and stops every running job (they end failed: "the scheduler shut down");
  // `done` runs once all have ended. Calling it again kills what is left at once.
  void Shutdown(std::function<void()> done);

 private:
  struct Entry;
  Entry* Find(const std::string& job) const;
  // What a stored job holds while it runs (its memory estimate read again from its spec).
  JobNeed NeedOf(const JobRecord& record) const;
  void ScheduleSoon();
  void Schedule();
  void StartJob(Entry& entry);
  void OnStarted(int64_t id, const std::vector<ProcessId>& ids);
  void OnJobLine(int64_t id, const OutputLine& line);
  void OnProcessExit(const Backend* backend, const ProcessExit& exit);
  Backend* BackendFor(const std::string& kind) const;
  void OnRunDone(int64_t id, absl::StatusOr<RunReport> result);
  void Reattach(Entry& entry);
  void OnAdoptedExit(int64_t id);
  // Restarts record.processes[index] of a re-attached local job from its stored spec, as a child
  // of the local backend, while the job's restart policy allows: a learner that exited without
  // finishing, the evaluator before the final evaluation, or a shard of a job with checkpoints
  // (it resumes from its checkpoint at its address). True when it was started.
  bool Relaunch(Entry& entry, size_t index);
  void AdvanceAdopted(Entry& entry);
  void StopAdopted(Entry& entry, const std::function<bool(const std::string& role)>& which, absl::Duration grace);
  void FinishAdoptedFromEvents(Entry& entry);
  void Finish(Entry& entry, JobState state, std::string reason);
  void Persist(const Entry& entry, bool with_processes = false);
  void Changed(const Entry& entry);
  void MaybeShutdownDone();
  int64_t NowMs() const;

  EventLoop& loop_;
  SchedulerBackends backends_;
  JobStore& store_;
  SchedulerOptions options_;
  JobQueue queue_;
  std::map<int64_t, std::unique_ptr<Entry>> jobs_;
  std::map<std::pair<const Backend*, ProcessId>, int64_t> process_job_;  // backend process -> job
  std::vector<std::pair<Backend*, ListenerId>> exit_listeners_;
  struct LineWatch {
    int64_t job;
    std::function<void(const std::string&)> line;
    std::function<void()> end;
  };
  std::map<WatchId, LineWatch> line_watches_;
  std::map<WatchId, std::function<void(const JobRecord&)>> job_watches_;
  WatchId next_watch_ = 1;
  bool schedule_posted_ = false;
  bool shutting_down_ = false;
  std::vector<std::function<void()>> shutdown_done_;
  Liveness liveness_;
};

}  // namespace orrery::scheduler
