// The Rendezvous of `orrery mpi-rank`: MPI_COMM_WORLD under mpirun. MPI is used for launch and
// rendezvous only (MPI_Allgather of endpoints, MPI_Ibarrier to end the job); every parameter goes
// over gRPC.
#pragma once

#include <map>
#include <memory>

#include <mpi.h>

#include "scheduler/backends/rendezvous.h"

namespace orrery::cli {

// At most one per process (MPI can be initialized once). Threads: MPI_THREAD_SERIALIZED or
// better is requested, so the rendezvous may be used from different threads in turn.
class MpiRendezvous final : public scheduler::Rendezvous {
 public:
  // Calls MPI_Init_thread; UNAVAILABLE if MPI provides no thread support at all.
  static absl::StatusOr<std::unique_ptr<MpiRendezvous>> Init();

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // MPI_Allgather of the lengths then MPI_Allgatherv of the bytes. `timeout` is not enforced:
  // a rank that fails to arrive aborts the job through mpirun instead.
  absl::StatusOr<std::vector<std::string>> AllGather(const std::string& value,
                                                     absl::Duration timeout) override;
  absl::Status Arrive(int phase) override;         // MPI_Ibarrier
  absl::StatusOr<bool> Test(int phase) override;   // MPI_Test
  void Finalize() override;                        // MPI_Finalize
  void Abort(int code, const std::string& reason) override;  // MPI_Abort: does not return

 private:
  MpiRendezvous() = default;
  int rank_ = 0;
  int size_ = 1;
  std::map<int, MPI_Request> barriers_;
  std::map<int, bool> completed_;
};

}  // namespace orrery::cli
