// `orrery scheduler`: the daemon's object graph — the job store, the event loop and the local, mpi
// and slurm backends,
// the JobScheduler, the gRPC JobService and the Prometheus /metrics endpoint — and its lifecycle.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/tls.h"

namespace orrery::scheduler {

struct SchedulerDaemonOptions {
  std::string listen = "127.0.0.1:7070";  // gRPC JobService; port 0: the OS chooses
  std::string store_path;                 // SQLite file, created if missing
  std::string log_root;                   // "" = <store directory>/<store name>-logs
  int slots = 0;                          // 0 = the machine's cores
  int64_t memory_bytes = 0;               // lent to local jobs; 0 = the machine's MemTotal
  std::string token;                      // bearer token every request must carry; required
  std::string metrics_listen;             // "host:port" for GET /metrics; "" = none
  std::string orrery_binary;              // started for every process of every job
  // TLS on the JobService: the daemon's certificate and key; with `tls.ca`, clients must present
  // a certificate it signed (mutual TLS). All empty: plaintext (fine on 127.0.0.1 only).
  server::TlsFiles tls;
  // `backend: mpi` jobs: mpirun's extra arguments (e.g. --hostfile FILE). Refused at submit when
  // no mpirun is in the daemon's PATH.
  std::vector<std::string> mpirun_args;
  // `backend: slurm` jobs: sbatch's extra arguments (e.g. --partition=debug) and the directory of
  // their batch scripts, rendezvous and task output ("" = <store directory>/<store name>-slurm;
  // every node must see it). Refused at submit when no sbatch is in the daemon's PATH. Slurm
  // commands find the cluster as the daemon's environment says (SLURM_CONF).
  std::vector<std::string> sbatch_args;
  std::string slurm_work_dir;
};

// Runs the daemon until SIGINT or SIGTERM. Prints `ORRERY_SCHEDULER_METRICS host:port` (when
// serving metrics) and then `ORRERY_SCHEDULER_READY host:port` on stdout once it serves. On the
// first signal it stops serving and stops every running job (they end failed), then returns; a
// second signal kills what is left at once. A daemon killed with -9 leaves its jobs running; the
// next one re-attaches to them (see JobScheduler::Recover). Errors: bad options
// (INVALID_ARGUMENT), the store or an address that cannot be opened. Call from the main thread
// before other threads exist (it takes over SIGINT, SIGTERM and SIGCHLD).
absl::Status RunSchedulerDaemon(const SchedulerDaemonOptions& options);

}  // namespace orrery::scheduler
