// How the ranks of a job that a launcher starts as one unit (mpirun, srun) find each other and
// agree on when to stop: an all-gather for the shards' endpoints and numbered non-blocking
// barriers. `orrery mpi-rank` uses MPI for it, `orrery slurm-rank` a shared directory
// (FileRendezvous). No parameter traffic goes through a Rendezvous.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace orrery::scheduler {

// Threads: one thread at a time (implementations may be called from different threads in turn).
class Rendezvous {
 public:
  virtual ~Rendezvous() = default;

  virtual int rank() const = 0;  // in [0, size)
  virtual int size() const = 0;

  // Collective: every rank calls it, in the same order relative to every other collective, with
  // its own `value`; returns all ranks' values indexed by rank. Blocks until every rank has
  // called it, `timeout` passes (DEADLINE_EXCEEDED, where the implementation can bound it) or a
  // rank aborts (ABORTED with its reason).
  virtual absl::StatusOr<std::vector<std::string>> AllGather(const std::string& value,
                                                             absl::Duration timeout) = 0;

  // Enters non-blocking barrier `phase`; every rank enters the same phases in the same order.
  // Returns at once.
  virtual absl::Status Arrive(int phase) = 0;
  // True once every rank has arrived at `phase` (this rank must have). ABORTED when another rank
  // aborted the job. Does not block.
  virtual absl::StatusOr<bool> Test(int phase) = 0;

  // This rank is done and every barrier it entered has completed (MPI_Finalize).
  virtual void Finalize() = 0;
  // Tells every rank that the job failed (`reason`), so that nobody waits for a rank that will
  // never arrive. The MPI implementation does not return (MPI_Abort ends the whole job); others
  // return and the caller exits with `code`.
  virtual void Abort(int code, const std::string& reason) = 0;
};

}  // namespace orrery::scheduler
