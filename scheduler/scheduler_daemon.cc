#include "scheduler/scheduler_daemon.h"

#include <signal.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "base/cpu_quota.h"
#include "base/file_lock.h"
#include "base/proc_stat.h"
#include "base/status_macros.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "boost/process/search_path.hpp"
#include "scheduler/backends/local_backend.h"
#include "scheduler/backends/mpi_backend.h"
#include "scheduler/backends/slurm_backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/job_scheduler.h"
#include "scheduler/job_service.h"
#include "scheduler/job_store.h"

namespace orrery::scheduler {
namespace {

namespace bp = boost::process;
namespace fs = std::filesystem;

// The scheduler's gauges, refreshed on the loop thread after every job change.
class SchedulerMetrics {
 public:
  explicit SchedulerMetrics(prometheus::Registry& registry)
      : jobs_(prometheus::BuildGauge().Name("orrery_scheduler_jobs").Help("Jobs by state").Register(registry)),
        queue_(prometheus::BuildGauge()
                   .Name("orrery_scheduler_queue_length")
                   .Help("Jobs waiting for slots")
                   .Register(registry)
                   .Add({})),
        slots_(prometheus::BuildGauge()
                   .Name("orrery_scheduler_slots")
                   .Help("Resource slots (cores): total and held by running jobs")
                   .Register(registry)),
        memory_(prometheus::BuildGauge()
                    .Name("orrery_scheduler_memory_bytes")
                    .Help("Memory lent to local jobs: total and held by running jobs (their estimates)")
                    .Register(registry)) {}

  void Update(const SchedulerStats& stats) {
    for (const auto& [state, count] : stats.jobs) jobs_.Add({{"state", JobStateName(state)}}).Set(count);
    queue_.Set(stats.queue_length);
    slots_.Add({{"kind", "total"}}).Set(stats.slots_total);
    slots_.Add({{"kind", "used"}}).Set(stats.slots_used);
    memory_.Add({{"kind", "total"}}).Set(static_cast<double>(stats.memory_total));
    memory_.Add({{"kind", "used"}}).Set(static_cast<double>(stats.memory_used));
  }

 private:
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Gauge& queue_;
  prometheus::Family<prometheus::Gauge>& slots_;
  prometheus::Family<prometheus::Gauge>& memory_;
};

}  // namespace

absl::Status RunSchedulerDaemon(const SchedulerDaemonOptions& options) {
  if (options.token.empty()) {
    return absl::InvalidArgumentError(
        "no token: pass --token-file FILE or set ORRERY_SCHEDULER_TOKEN; clients must send the same token");
  }
  if (options.store_path.empty()) return absl::InvalidArgumentError("--store: required");
  if (options.slots < 0) return absl::InvalidArgumentError("--slots: must be >= 1 (0 = the machine's cores)");
  if (options.memory_bytes < 0) {
    return absl::InvalidArgumentError("--memory: must be a size such as 8GiB (0 = the machine's MemTotal)");
  }
  if (options.orrery_binary.empty()) return absl::InvalidArgumentError("no orrery binary to start jobs with");

  const fs::path store_path = fs::absolute(options.store_path);
  std::error_code ec;
  if (store_path.has_parent_path()) fs::create_directories(store_path.parent_path(), ec);
  // Two daemons on one store would both start its queued jobs and both adopt its running ones.
  ASSIGN_OR_RETURN(FileLock store_lock,
                   FileLock::Acquire(store_path.string() + ".lock", absl::StrCat("--store ", store_path.string()),
                                     "another scheduler", "stop that one first, or give this one its own --store"));
  ASSIGN_OR_RETURN(std::unique_ptr<JobStore> store, JobStore::Open(store_path.string()));

  SchedulerOptions scheduler_options;
  scheduler_options.slots =
      options.slots > 0 ? options.slots : UsableCpuCount();
  // Unreadable MemTotal (not Linux): memory is not counted.
  scheduler_options.memory_bytes =
      options.memory_bytes > 0 ? options.memory_bytes : std::max<int64_t>(0, MemInfoBytes("MemTotal"));
  scheduler_options.orrery_binary = options.orrery_binary;
  scheduler_options.log_root =
      options.log_root.empty()
          ? (store_path.parent_path() / absl::StrCat(store_path.stem().string(), "-logs")).string()
          : fs::absolute(options.log_root).string();
  // Job ids count per store, so two daemons sharing a log root would both write job-1/.
  fs::create_directories(scheduler_options.log_root, ec);
  ASSIGN_OR_RETURN(FileLock log_root_lock,
                   FileLock::Acquire(scheduler_options.log_root + "/.lock",
                                     absl::StrCat("--log-root ", scheduler_options.log_root), "another scheduler",
                                     "give each scheduler its own --log-root"));

  // Writing to a client that left must not kill the daemon (gRPC avoids it; our stdout may not).
  ::signal(SIGPIPE, SIG_IGN);
  EventLoop loop;
  LocalBackend::Options backend_options;
  backend_options.kill_with_parent = false;  // jobs outlive a crashed daemon; the next re-attaches
  backend_options.ignore_sigpipe = true;
  backend_options.relay_output_after_exit = true;  // what they print after our death reaches their logs
  backend_options.tail_lines = 50;
  LocalBackend backend(loop, backend_options);
  SchedulerBackends backends;
  backends.local = &backend;

  std::unique_ptr<MpiBackend> mpi;
  if (const std::string mpirun = bp::search_path("mpirun").string(); !mpirun.empty()) {
    MpiBackend::Options o;
    o.mpirun = mpirun;
    o.extra_args = options.mpirun_args;
    o.launcher = backend_options;  // mpirun outlives a crashed daemon too, and so its ranks
    o.group.tail_lines = backend_options.tail_lines;
    mpi = std::make_unique<MpiBackend>(loop, o);
    backends.mpi = mpi.get();
  } else {
    backends.mpi_missing = "no mpirun in the scheduler's PATH (install openmpi-bin, then restart the scheduler)";
  }
  std::unique_ptr<SlurmBackend> slurm;
  if (!bp::search_path("sbatch").empty()) {
    SlurmBackend::Options o;
    o.work_dir = options.slurm_work_dir.empty()
                     ? (store_path.parent_path() / absl::StrCat(store_path.stem().string(), "-slurm")).string()
                     : fs::absolute(options.slurm_work_dir).string();
    o.sbatch_args = options.sbatch_args;
    o.commands = backend_options;
    o.commands.kill_with_parent = true;  // sbatch, squeue, ...: short commands of this daemon
    o.group.tail_lines = backend_options.tail_lines;
    // A daemon that stops leaves its Slurm jobs to Slurm; the next one finds them by their pids.
    o.cancel_on_destroy = false;
    slurm = std::make_unique<SlurmBackend>(loop, o);
    backends.slurm = slurm.get();
  } else {
    backends.slurm_missing = "no sbatch in the scheduler's PATH (install slurm-client, then restart the scheduler)";
  }
  JobScheduler scheduler(loop, backends, *store, scheduler_options);
  RETURN_IF_ERROR(scheduler.Recover());

  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  SchedulerMetrics metrics(*registry);
  metrics.Update(scheduler.Stats());
  WatchId metrics_watch =
      scheduler.WatchJobs([&metrics, &scheduler](const JobRecord&) { metrics.Update(scheduler.Stats()); });
  if (!options.metrics_listen.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(options.metrics_listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("--metrics-listen ", options.metrics_listen, ": ", e.what()));
    }
    exposer->RegisterCollectable(registry);
    std::vector<int> ports = exposer->GetListeningPorts();
    const std::string host = options.metrics_listen.substr(0, options.metrics_listen.rfind(':'));
    std::printf("ORRERY_SCHEDULER_METRICS %s:%d\n", host.c_str(), ports.empty() ? 0 : ports[0]);
  }

  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, server::MakeServerCredentials(options.tls));
  JobServiceImpl service(loop, scheduler, options.token);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, credentials, &port);
  builder.RegisterService(&service);
  // The sync server's threads notice a shutdown only between polls (1 s by default).
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::CQ_TIMEOUT_MSEC, 100);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return absl::UnavailableError(absl::StrCat("--listen ", options.listen, ": cannot listen"));
  const std::string host = options.listen.substr(0, options.listen.rfind(':'));
  std::printf("ORRERY_SCHEDULER_READY %s:%d\n", host.c_str(), port);
  std::fflush(stdout);

  // Shutdown: stop serving (on another thread: in-flight calls need the loop) while the jobs stop.
  std::thread server_stopper;
  bool server_down = false, jobs_down = false;
  auto maybe_stop = [&] {
    if (server_down && jobs_down) loop.Stop();
  };
  int signals = 0;
  loop.OnSignals({SIGINT, SIGTERM}, [&](int sig) {
    if (++signals > 1) {
      scheduler.Shutdown(nullptr);  // again: kill what is left now
      return;
    }
    std::fprintf(stderr, "orrery scheduler: %s; stopping the running jobs\n", strsignal(sig));
    service.Close();
    server_stopper = std::thread([&] {
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
      loop.Post([&] {
        server_down = true;
        maybe_stop();
      });
    });
    scheduler.Shutdown([&] {
      jobs_down = true;
      maybe_stop();
    });
  });
  loop.Run();
  if (server_stopper.joinable()) server_stopper.join();
  scheduler.Unwatch(metrics_watch);
  server.reset();
  exposer.reset();
  return absl::OkStatus();
}

}  // namespace orrery::scheduler
