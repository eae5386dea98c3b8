// `orrery mpi-rank`, `orrery slurm-rank`: one rank of a job started by mpirun or srun;
// `orrery render-k8s`: a job's Kubernetes manifests.
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>
#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/log_relay.h"
#include "cli/mpi_rendezvous.h"
#include "cli/rank_main.h"
#include "scheduler/backends/file_rendezvous.h"
#include "scheduler/backends/kubernetes_manifests.h"
#include "scheduler/job_spec.h"

extern char** environ;

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
  cmd->add_option("--events-dir", o->events_dir,
                  "Learners and the evaluator also append their tagged lines to DIR/<role>.events when this "
                  "host can write there");
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
  cmd->add_option("--rendezvous", *dir, "Directory shared by every rank, fresh for each job (default: $ORRERY_RENDEZVOUS)")
      ->envname("ORRERY_RENDEZVOUS");
  cmd->add_option("--rank", *rank, "This rank (default: $SLURM_PROCID)");
  cmd->add_option("--size", *size, "Number of ranks (default: $SLURM_NTASKS)");
  cmd->callback([&commands, o, start_timeout, dir, rank, size] {
    commands.Set([o, start_timeout, dir, rank, size] {
      o->start_timeout = absl::Seconds(*start_timeout);
      const int r = *rank >= 0 ? *rank : EnvInt("SLURM_PROCID", -1);
      const int n = *size >= 0 ? *size : EnvInt("SLURM_NTASKS", -1);
      if (dir->empty()) {
        return Fail("slurm-rank", absl::InvalidArgumentError("--rendezvous: no directory given (nor $ORRERY_RENDEZVOUS)"));
      }
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

// Runs `argv` with this process's stdout and stderr; returns its exit code (127: not started).
int RunAndWait(const std::vector<std::string>& argv) {
  std::vector<std::string> copy = argv;
  std::vector<char*> args;
  for (std::string& a : copy) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) return 127;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void AddRenderK8sCommand(CLI::App& app, Commands& commands) {
  auto o = std::make_shared<scheduler::KubernetesOptions>();
  auto job_path = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto no_secret = std::make_shared<bool>(false);
  auto json = std::make_shared<bool>(false);
  auto apply = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "render-k8s",
      "Write a job's Kubernetes manifests (ConfigMap, Secret, headless Service + StatefulSet of shards, "
      "Indexed Job of learners, evaluator Job, NetworkPolicy) and a kustomization.yaml; --apply also runs "
      "kubectl apply -k on them");
  cmd->add_option("job", *job_path, "Job spec YAML")->required();
  cmd->add_option("--out", *out, "Directory to write the manifests to")->required();
  cmd->add_option("--image", o->image, "Container image (built from deploy/Dockerfile)")->capture_default_str();
  cmd->add_option("--namespace", o->namespace_name, "metadata.namespace of every object (default: none)");
  cmd->add_option("--token", o->token, "Job token for the Secret (default: $ORRERY_TOKEN, else random)")
      ->envname("ORRERY_TOKEN");
  cmd->add_option("--port", o->port, "The shards' gRPC port")->capture_default_str();
  cmd->add_option("--threads", o->threads_per_learner, "Compute threads per learner")->capture_default_str();
  cmd->add_option("--data", o->data_dir, "Fashion-MNIST directory inside the image")->capture_default_str();
  cmd->add_flag("--no-secret", *no_secret, "Leave the Secret out (a kustomize overlay generates it)");
  cmd->add_flag("--json", *json, "Write JSON instead of YAML");
  cmd->add_flag("--apply", *apply, "Then run kubectl apply -k DIR against the configured cluster");
  cmd->callback([&commands, o, job_path, out, no_secret, json, apply] {
    commands.Set([o, job_path, out, no_secret, json, apply] {
      absl::StatusOr<scheduler::JobSpec> job = scheduler::LoadJobSpec(*job_path);
      if (!job.ok()) return Fail("render-k8s", job.status());
      o->secret = !*no_secret;
      absl::StatusOr<std::vector<scheduler::KubernetesObject>> objects = scheduler::RenderKubernetes(*job, *o);
      if (!objects.ok()) return Fail("render-k8s", objects.status());
      absl::StatusOr<std::vector<std::string>> written = scheduler::WriteKubernetesManifests(*objects, *out, *json);
      if (!written.ok()) return Fail("render-k8s", written.status());
      for (const std::string& path : *written) std::printf("%s\n", path.c_str());
      std::fflush(stdout);
      if (!*apply) return 0;
      const int code = RunAndWait({"kubectl", "apply", "-k", *out});
      if (code != 0) {
        return Fail("render-k8s", absl::UnavailableError(absl::StrCat(
                                      "kubectl apply -k ", *out, " failed (exit code ", code, ")")));
      }
      return 0;
    });
  });
}

}  // namespace

void AddLogRelayCommand(CLI::App& app, Commands& commands) {
  auto file = std::make_shared<std::string>(), role = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("log-relay", "Internal: carries a process's output into its log file once "
                                                  "the scheduler that read it has gone (see cli/log_relay.h)");
  cmd->group("");  // not listed in --help
  cmd->add_option("--file", *file, "Log file to append to")->required();
  cmd->add_option("--role", *role, "Role named on each line")->required();
  cmd->callback([&commands, file, role] { commands.Set([file, role] { return RunLogRelay(*file, *role); }); });
}

void AddBackendCommands(CLI::App& app, Commands& commands) {
  AddLogRelayCommand(app, commands);
  AddMpiRankCommand(app, commands);
  AddSlurmRankCommand(app, commands);
  AddRenderK8sCommand(app, commands);
}

}  // namespace orrery::cli
