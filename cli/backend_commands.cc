// `orrery mpi-rank`, `orrery slurm-rank`: one rank of a job started by mpirun or srun;
// `orrery render-k8s`: a job's Kubernetes manifests.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/mpi_rendezvous.h"
#include "cli/rank_main.h"
#include "scheduler/backends/file_rendezvous.h"

namespace orrery::cli {
namespace {

int Fail(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "orrery %s: %s\n", command, std::string(status.message()).c_str());
  return 1;
}

// Blocks SIGINT and SIGTERM in this thread before any other thread starts (MPI's included), so
// every thread inherits the mask and the rank's roles receive them with sigwait.
void BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void AddRankOptions(CLI::App* cmd, RankOptions* o, double* start_timeout) {
  cmd->add_option("job", o->job_path, "Job spec YAML (the same file on every node)")->required();
  cmd->add_option("--host", o->host,
                  "Address shards bind and advertise (default: 127.0.0.1 when all ranks share a host, "
                  "else 0.0.0.0 advertised as the host name)");
  cmd->add_option("--threads", o->threads, "Compute threads per learner (0 = cores / learners on the host)")
      ->capture_default_str();
  cmd->add_option("--start-timeout", *start_timeout, "Seconds for every rank to reach the rendezvous")
      ->capture_default_str();
}

void AddMpiRankCommand(CLI::App& app, Commands& commands) {
  auto o = std::make_shared<RankOptions>();
  auto start_timeout = std::make_shared<double>(120);
  CLI::App* cmd = app.add_subcommand(
      "mpi-rank",
      "Run one rank of a job under mpirun (ranks 0..S-1 shards, then learners, then the evaluator; "
      "mpirun -np S+L+1 orrery mpi-rank JOB.yaml)");
  AddRankOptions(cmd, o.get(), start_timeout.get());
  cmd->callback([&commands, o, start_timeout] {
    commands.Set([o, start_timeout] {
      o->start_timeout = absl::Seconds(*start_timeout);
      BlockStopSignals();
      absl::StatusOr<std::unique_ptr<MpiRendezvous>> rv = MpiRendezvous::Init();
      if (!rv.ok()) return Fail("mpi-rank", rv.status());
      RankResult result = RunRank(*o, **rv);
      if (result.finalize) (*rv)->Finalize();
      return result.exit_code;
    });
  });
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int out = fallback;
  if (v == nullptr || !absl::SimpleAtoi(v, &out)) return fallback;
  return out;
}

void AddSlurmRankCommand(CLI::App& app, Commands& commands) {
  auto o = std::make_shared<RankOptions>();
  auto start_timeout = std::make_shared<double>(120);
  auto dir = std::make_shared<std::string>();
  auto rank = std::make_shared<int>(-1);
  auto size = std::make_shared<int>(-1);
  CLI::App* cmd = app.add_subcommand(
      "slurm-rank",
      "Run one rank of a job under srun (or any launcher): rendezvous through files in a shared "
      "directory; rank and size from SLURM_PROCID and SLURM_NTASKS");
  AddRankOptions(cmd, o.get(), start_timeout.get());
  cmd->add_option("--rendezvous", *dir, "Directory shared by every rank, fresh for each job")->required();
  cmd->add_option("--rank", *rank, "This rank (default: $SLURM_PROCID)");
  cmd->add_option("--size", *size, "Number of ranks (default: $SLURM_NTASKS)");
  cmd->callback([&commands, o, start_timeout, dir, rank, size] {
    commands.Set([o, start_timeout, dir, rank, size] {
      o->start_timeout = absl::Seconds(*start_timeout);
      const int r = *rank >= 0 ? *rank : EnvInt("SLURM_PROCID", -1);
      const int n = *size >= 0 ? *size : EnvInt("SLURM_NTASKS", -1);
      if (r < 0 || n < 1) {
        return Fail("slurm-rank", absl::InvalidArgumentError(
                                      "no rank: run it under srun, or give --rank and --size"));
      }
      BlockStopSignals();
      absl::StatusOr<std::unique_ptr<scheduler::FileRendezvous>> rv = scheduler::FileRendezvous::Create(*dir, r, n);
      if (!rv.ok()) return Fail("slurm-rank", rv.status());
      RankResult result = RunRank(*o, **rv);
      if (result.finalize) (*rv)->Finalize();
      return result.exit_code;
    });
  });
}

}  // namespace

void AddBackendCommands(CLI::App& app, Commands& commands) {
  AddMpiRankCommand(app, commands);
  AddSlurmRankCommand(app, commands);
}

}  // namespace orrery::cli
