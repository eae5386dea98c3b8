// `orrery server`, `orrery learner`, `orrery run`: the distributed roles.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/cpu_affinity.h"
#include "cli/commands.h"
#include "cli/output_file.h"
#include "learner/distributed_learner.h"
#include "scheduler/job_spec.h"
#include "scheduler/run_job.h"
#include "server/server_main.h"

namespace orrery::cli {
namespace {

// The path of the running executable, so that `orrery run` starts the same build for every role.
std::string SelfPath(const char* fallback) {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return fallback;
  buf[n] = '\0';
  return buf;
}

int Fail(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "orrery %s: %s\n", command, std::string(status.message()).c_str());
  return 1;
}

constexpr const char* kCpusHelp =
    "Bind this process (all its threads) to these cores, as taskset -c takes them: 1, 0-3, 0,2 "
    "(default: every core it may use)";

// A role's --cpus flag: Cpus() in the subcommand's callback (a bad list is a usage error naming
// the flag), Bind() first thing when the role runs (a cpu it may not use fails it).
class CpusFlag {
 public:
  CpusFlag(CLI::App* cmd, const std::string& help) : text_(std::make_shared<std::string>()) {
    option_ = cmd->add_option("--cpus", *text_, help);
  }
  std::vector<int> Cpus() const {
    if (option_->count() == 0) return {};
    absl::StatusOr<std::vector<int>> cpus = ParseCpuList(*text_);
    if (!cpus.ok()) throw CLI::ValidationError("--cpus", std::string(cpus.status().message()));
    return *cpus;
  }
  static absl::Status Bind(const std::vector<int>& cpus) {
    if (cpus.empty()) return absl::OkStatus();
    absl::Status st = BindProcessToCpus(cpus);
    return st.ok() ? st : absl::Status(st.code(), absl::StrCat("--cpus: ", st.message()));
  }

 private:
  std::shared_ptr<std::string> text_;
  CLI::Option* option_ = nullptr;
};

void AddServerCommand(CLI::App& app, Commands& commands) {
  auto o = std::make_shared<server::ServerOptions>();
  CLI::App* cmd = app.add_subcommand("server", "Run one parameter-server shard (prints ORRERY_SERVER_READY host:port when it serves)");
  cmd->add_option("--listen", o->listen_address, "host:port to listen on (port 0: the OS chooses)")->capture_default_str();
  cmd->add_option("--shard", o->shard_index, "This shard's index in [0, shards)")->capture_default_str();
  cmd->add_option("--shards", o->num_shards, "Number of shards in the job")->capture_default_str();
  cmd->add_option("--job", o->job_id, "Job id every request must carry")->capture_default_str();
  cmd->add_option("--token", o->token, "Job token every request must carry (default: $ORRERY_TOKEN; empty: no check)")->envname("ORRERY_TOKEN");
  cmd->add_option("--layout", o->layout_path, "ModelLayout proto file (default: the first learner's layout)");
  cmd->add_option("--init-weights", o->initial_weights_path, "Raw float32 initial weights (needs --layout; default: the first learner's Init)");
  cmd->add_option("--protocol", o->protocol, "hardsync | softsync:N | async | ssp:S")->capture_default_str();
  cmd->add_option("--learners", o->learners, "λ: learners the job starts with")->capture_default_str();
  cmd->add_option("--lr", o->lr, "α₀: base learning rate")->capture_default_str();
  cmd->add_option("--staleness-rule", o->staleness_rule, "none (α₀) | inverse (α₀ / max(1, τ))")->capture_default_str();
  cmd->add_option("--momentum", o->momentum, "Server-side momentum in [0, 1)")->capture_default_str();
  cmd->add_option("--lr-decay-at-samples", o->lr_decay_at_samples, "Step decay: multiply the rate by --lr-decay-factor once the shard has applied gradients of this many training samples (comma-separated, ascending)")->delimiter(',');
  cmd->add_option("--lr-decay-factor", o->lr_decay_factor, "Step decay factor in (0, 1]")->capture_default_str();
  cmd->add_option("--weights", o->weights, "Master weights: fp32 | fixed16 (16-bit fixed point <16-FL, FL>, rounded after every update)")->check(CLI::IsMember({"fp32", "fixed16"}))->capture_default_str();
  cmd->add_option("--weights-fl", o->weights_fl, "fixed16 weights: fractional bits FL in [0, 30]")->check(CLI::Range(0, 30))->capture_default_str();
  cmd->add_option("--weights-rounding", o->weights_rounding, "fixed16 weights: rounding after each update: stochastic | nearest")->check(CLI::IsMember({"stochastic", "nearest"}))->capture_default_str();
  cmd->add_option("--learner-timeout", o->learner_timeout_seconds, "Seconds of silence before a learner is dropped from hardsync/ssp accounting")->capture_default_str();
  cmd->add_option("--max-message-bytes", o->max_message_bytes, "Largest request or response")->capture_default_str();
  cmd->add_option("--checkpoint-dir", o->checkpoint_dir, "Keep this shard's checkpoint (shard-<i>.ckpt) in this directory");
  cmd->add_option("--checkpoint-every", o->checkpoint_every_seconds, "Seconds between checkpoints")->capture_default_str();
  cmd->add_flag("--resume", o->resume, "Continue from the checkpoint in --checkpoint-dir (a missing one starts fresh; a corrupt or mismatched one is refused)");
  cmd->add_option("--metrics-listen", o->metrics_listen, "host:port serving Prometheus /metrics (port 0: the OS chooses; printed as ORRERY_SERVER_METRICS)");
  cmd->add_option("--tls-cert", o->tls_cert, "Serve TLS with this PEM certificate (needs --tls-key)");
  cmd->add_option("--tls-key", o->tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--tls-client-ca", o->tls_client_ca, "Mutual TLS: require client certificates signed by this PEM CA");
  const CpusFlag cpus_flag(cmd, kCpusHelp);
  cmd->callback([&commands, o, cpus_flag] {
    commands.Set([o, cpus = cpus_flag.Cpus()] {
      if (absl::Status st = CpusFlag::Bind(cpus); !st.ok()) return Fail("server", st);
      return server::RunServer(*o);
    });
  });
}

void AddLearnerCommand(CLI::App& app, Commands& commands) {
  auto o = std::make_shared<learner::LearnerOptions>();
  auto servers = std::make_shared<std::string>();
  auto rpc_timeout = std::make_shared<double>(30), pull_timeout = std::make_shared<double>(600),
       retry_budget = std::make_shared<double>(60);
  CLI::App* cmd = app.add_subcommand("learner", "Run one learner (or, with --evaluator, the evaluator) of a distributed job");
  cmd->add_option("--servers", *servers, "Comma-separated host:port of every shard, shard 0 first")->required();
  cmd->add_option("--job", o->job_id, "Job id")->capture_default_str();
  cmd->add_option("--token", o->token, "Job token (default: $ORRERY_TOKEN)")->envname("ORRERY_TOKEN");
  cmd->add_option("--model", o->model_path, "Model spec YAML")->required();
  cmd->add_option("--data", o->data_dir, "Directory of Fashion-MNIST IDX files")->capture_default_str();
  cmd->add_option("--index", o->index, "This learner's slice of the training set, in [0, learners)")->capture_default_str();
  cmd->add_option("--learners", o->learners, "Number of slices (learners in the job)")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Minibatch size")->capture_default_str();
  cmd->add_option("--epochs", o->epochs, "Passes over this learner's slice")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for the initial weights (same on every learner) and data order")->capture_default_str();
  cmd->add_option("--limit-train", o->limit_train, "Use only the first N training images before slicing (0 = all)")->capture_default_str();
  cmd->add_option("--limit-test", o->limit_test, "Evaluator: only the first N test images (0 = all)")->capture_default_str();
  cmd->add_option("--slow", o->slow_factor, "Straggler emulation: each step's work (batch and compute, not the pull) takes this many times as long")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Compute threads (0 = one per core this process may use, no more than its cgroup's CPU quota)")->capture_default_str();
  cmd->add_option("--chunk-size", o->chunk_size, "Elements per chunk (every process of the job must agree)")->capture_default_str();
  cmd->add_flag("--evaluator", o->evaluator, "Observe instead of train: evaluate pulled weights every --eval-every seconds; SIGTERM gives a final evaluation");
  cmd->add_option("--eval-every", o->eval_every_seconds, "Evaluator: seconds between evaluations")->capture_default_str();
  cmd->add_option("--report-every", o->report_every_seconds, "Seconds between progress lines")->capture_default_str();
  cmd->add_option("--events-file", o->events_path,
                  "Also append every tagged line (ORRERY_EVAL, ORRERY_LEARNER_DONE, ...) to this file");
  cmd->add_option("--rpc-timeout", *rpc_timeout, "Seconds per RPC attempt")->capture_default_str();
  cmd->add_option("--pull-timeout", *pull_timeout, "Seconds a pull may wait for other learners")->capture_default_str();
  cmd->add_option("--retry-budget", *retry_budget, "Seconds of backoff spent retrying an unavailable shard")->capture_default_str();
  cmd->add_option("--tls-ca", o->tls.ca, "Connect with TLS, verifying the shards against this PEM CA");
  cmd->add_option("--tls-cert", o->tls.cert, "Mutual TLS: this learner's PEM certificate (needs --tls-key)");
  cmd->add_option("--tls-key", o->tls.key, "Mutual TLS: PEM private key of --tls-cert");
  auto precision = std::make_shared<std::string>("fp32");
  auto rounding = std::make_shared<std::string>("stochastic");
  auto wire = std::make_shared<std::string>("fp32");
  auto wire_fl = std::make_shared<int>(-1);
  cmd->add_option("--precision", *precision, "Arithmetic of the dense layers: fp32 | fixed16 (as in orrery train)")->check(CLI::IsMember({"fp32", "fixed16"}))->capture_default_str();
  CLI::Option* fl = cmd->add_option("--fl", o->precision.fixed.fl, "fixed16: fractional bits FL of weights, gradients and errors in the GEMMs")->capture_default_str();
  CLI::Option* activation_fl = cmd->add_option("--activation-fl", o->precision.fixed.activation_fl, "fixed16: fractional bits of the dense layers' inputs and outputs")->capture_default_str();
  CLI::Option* rounding_opt = cmd->add_option("--rounding", *rounding, "fixed16: rounding of every conversion and GEMM output: stochastic | nearest")->check(CLI::IsMember({"stochastic", "nearest"}))->capture_default_str();
  cmd->add_option("--wire", *wire, "Encoding of pushes and pulls: fp32 | fixed16 (half the bytes)")->check(CLI::IsMember({"fp32", "fixed16"}))->capture_default_str();
  CLI::Option* wire_fl_opt = cmd->add_option("--wire-fl", *wire_fl, "fixed16 wire: FL of pushed gradients in [0, 30] (default: per chunk from its range)")->check(CLI::Range(0, 30));
  const CpusFlag cpus_flag(cmd, absl::StrCat(kCpusHelp, "; --threads 0 then means one per core"));
  cmd->callback([&commands, o, servers, rpc_timeout, pull_timeout, retry_budget, precision, rounding, wire, wire_fl, fl, activation_fl, rounding_opt, wire_fl_opt, cpus_flag] {
    const std::vector<int> cpus = cpus_flag.Cpus();
    // The strings passed IsMember, so parsing cannot fail.
    o->precision.compute = learner::ParseComputeFormat(*precision).value();
    o->precision.fixed.rounding = learner::ParseRounding(*rounding).value();
    o->wire = *wire == "fixed16" ? proto::FIXED16 : proto::FP32;
    if (o->precision.compute != learner::ComputeFormat::kFixed16) {
      for (const CLI::Option* opt : {fl, activation_fl, rounding_opt}) {
        if (opt->count() > 0) throw CLI::ValidationError(opt->get_name(), "applies only with --precision fixed16");
      }
    }
    if (wire_fl_opt->count() > 0) {
      if (o->wire != proto::FIXED16) throw CLI::ValidationError("--wire-fl", "applies only with --wire fixed16");
      o->wire_fl = *wire_fl;
    }
    commands.Set([o, servers, rpc_timeout, pull_timeout, retry_budget, cpus] {
      // Before OpenMP and gRPC start their threads; OpenMP sized its pool from every core.
      if (absl::Status st = CpusFlag::Bind(cpus); !st.ok()) return Fail("learner", st);
      o->servers = absl::StrSplit(*servers, ',', absl::SkipEmpty());
      o->rpc_timeout = absl::Seconds(*rpc_timeout);
      o->pull_timeout = absl::Seconds(*pull_timeout);
      o->retry_budget = absl::Seconds(*retry_budget);
      absl::Status st = o->evaluator ? learner::RunEvaluator(*o) : learner::RunLearner(*o);
      return st.ok() ? 0 : Fail("learner", st);
    });
  });
}

void AddRunCommand(CLI::App& app, Commands& commands, const char* argv0) {
  auto job_path = std::make_shared<std::string>();
  auto metrics_out = std::make_shared<std::string>();
  auto log_dir = std::make_shared<std::string>();
  auto timeout = std::make_shared<double>(0);
  auto threads = std::make_shared<int>(0);
  auto quiet = std::make_shared<bool>(false);
  auto resume = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("run", "Run a job spec as local processes: its shards, learners and an evaluator on 127.0.0.1");
  cmd->add_option("job", *job_path, "Job spec YAML (see examples/jobs/)")->required();
  cmd->add_option("--metrics-out", *metrics_out, "Write metrics JSON here");
  cmd->add_option("--log-dir", *log_dir, "Per-process logs (default: orrery-runs/<job name>)");
  cmd->add_option("--timeout", *timeout, "Fail the job after this many seconds (0 = no limit)")->capture_default_str();
  cmd->add_option("--threads", *threads, "Compute threads per learner (0 = usable cores / learners; with bind: cores, one)")->capture_default_str();
  cmd->add_flag("--quiet", *quiet, "No progress output");
  cmd->add_flag("--resume", *resume, "Continue a stopped job: the shards start from the checkpoints in the spec's checkpoint.dir, the learners from the clocks kept there");
  std::string self = SelfPath(argv0);
  cmd->callback([&commands, job_path, metrics_out, log_dir, timeout, threads, quiet, resume, self] {
    commands.Set([job_path, metrics_out, log_dir, timeout, threads, quiet, resume, self] {
      absl::StatusOr<scheduler::JobSpec> job = scheduler::LoadJobSpec(*job_path);
      if (!job.ok()) return Fail("run", job.status());
      if (job->backend != scheduler::BackendKind::kLocal) {
        return Fail("run", absl::InvalidArgumentError(absl::StrCat(
                               *job_path, ": backend: orrery run starts local processes only; submit ",
                               scheduler::BackendKindName(job->backend), " jobs with orrery submit")));
      }
      if (*timeout < 0) return Fail("run", absl::InvalidArgumentError("--timeout: must be >= 0"));
      if (absl::Status st = CheckOutputPath("--metrics-out", *metrics_out); !st.ok()) {
        Fail("run", st);
        return 2;  // a usage error, found before anything starts
      }
      if (*resume && !job->checkpoint) {
        return Fail("run", absl::InvalidArgumentError(absl::StrCat(
                               "--resume: ", *job_path, " has no checkpoint: {dir, every_seconds} to resume from")));
      }
      scheduler::RunJobOptions options;
      options.orrery_binary = self;
      options.log_dir = log_dir->empty() ? "orrery-runs/" + job->name : *log_dir;
      if (*timeout > 0) options.timeout = absl::Seconds(*timeout);
      options.threads_per_learner = *threads;
      options.progress = !*quiet;
      options.resume = *resume;
      int stopped_by = 0;
      absl::StatusOr<scheduler::RunReport> report = scheduler::RunJob(*job, options, &stopped_by);
      if (!report.ok()) {
        Fail("run", report.status());
        return stopped_by != 0 ? 128 + stopped_by : 1;  // as a shell reports a command a signal stopped
      }
      std::printf("%s: test_accuracy %.4f  updates %llu  staleness mean %.2f max %llu  images/s %.0f  wall %.1fs%s\n",
                  job->name.c_str(), report->test_accuracy,
                  static_cast<unsigned long long>(report->updates_applied), report->staleness_mean,
                  static_cast<unsigned long long>(report->staleness_max), report->images_per_second,
                  report->wall_seconds,
                  report->time_to_target_seconds
                      ? absl::StrFormat("  time to target %.1fs", *report->time_to_target_seconds).c_str()
                      : "");
      if (report->checkpoint_failures > 0) {
        std::fprintf(stderr, "orrery run: warning: %d checkpoint write(s) failed, the last: %s\n",
                     report->checkpoint_failures, report->checkpoint_error.c_str());
      }
      if (!metrics_out->empty()) {
        absl::Status st = WriteOutputFile("--metrics-out", *metrics_out, scheduler::RunReportJson(*report, *job));
        if (!st.ok()) return Fail("run", st);
      }
      return 0;
    });
  });
}

}  // namespace

void AddDistributedCommands(CLI::App& app, Commands& commands) {
  AddServerCommand(app, commands);
  AddLearnerCommand(app, commands);
  AddRunCommand(app, commands, "orrery");
}

}  // namespace orrery::cli
