// One rank of a job that a launcher starts as a unit — `orrery mpi-rank` under mpirun,
// `orrery slurm-rank` under srun. The rank's number picks its role (scheduler/backends/
// job_ranks.h: shards first, then learners, then the evaluator); shards bind a port the OS
// chooses and every rank learns the endpoints through the Rendezvous; then each runs its role
// in this process, exactly as `orrery server` / `orrery learner` would. Barriers end the job:
// phase 1 completes when every learner has finished (the evaluator then makes its final
// evaluation), phase 2 when the evaluator has too (the shards then shut down).
//
// Lines on stdout, besides the roles' own ORRERY_* lines:
//   ORRERY_RANK {"rank":R,"size":N,"role":"learner-0","pid":P,"host":"node1"}   at start
//   ORRERY_RANK_EXIT {"rank":R,"role":"learner-0","code":C}                  just before exit
#pragma once

#include <string>

#include "absl/time/time.h"
#include "scheduler/backends/rendezvous.h"

namespace orrery::cli {

struct RankOptions {
  std::string job_path;  // the job spec YAML, readable on every node
  // Address shards bind and advertise. "": 127.0.0.1 when every rank runs on one host, else
  // bind 0.0.0.0 and advertise this host's name.
  std::string host;
  int threads = 0;  // compute threads per learner; 0: this host's cores / learner ranks on it
  absl::Duration start_timeout = absl::Seconds(120);  // for every rank to reach the rendezvous
  // A learner or evaluator rank also appends its tagged lines to DIR/<role>.events (orrery
  // learner --events-file), for a scheduler restarted after a crash; "" or a directory this host
  // cannot write to: stdout only.
  std::string events_dir;
};

struct RankResult {
  int exit_code = 0;
  // True when the rank took part in every barrier and may finalize the rendezvous; false when it
  // stopped early (a signal, an abort) and must exit without finalizing.
  bool finalize = false;
};

// Runs this rank's role to the end. Call on the main thread with SIGINT and SIGTERM already
// blocked in every thread (block them before MPI_Init, which starts threads): the roles wait for
// those signals themselves. A signal stops the rank early (exit code 128 + signal). A learner
// that fails still takes part in the barriers, so the job goes on without it (its exit code
// reports the failure); a shard that cannot start aborts the job. Exits the process if the
// launcher that started it (its parent) dies.
RankResult RunRank(const RankOptions& options, scheduler::Rendezvous& rendezvous);

}  // namespace orrery::cli
