// A training job spec: the YAML a user writes (examples/jobs/*.yaml), parsed and validated into a
// plain struct that `orrery run`, the scheduler daemon and every backend read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/restart_policy.h"

namespace orrery::scheduler {

inline constexpr char kDefaultDataDir[] = "/usr/share/datasets/fashion-mnist";

enum class ProtocolKind { kHardSync, kSoftSync, kAsync, kSsp };

// `hardsync`, `softsync:n` (n >= 1), `async`, `ssp:s` (s >= 0).
struct Protocol {
  ProtocolKind kind = ProtocolKind::kHardSync;
  int softsync_n = 0;       // kSoftSync only
  int ssp_staleness = 0;    // kSsp only
};

// Parses "hardsync", "softsync:4", "async", "ssp:2". The error names no key; callers add it.
absl::StatusOr<Protocol> ParseProtocol(const std::string& text);
// The canonical text ParseProtocol accepts ("softsync:4"), as servers take it on the command line.
std::string ProtocolToString(const Protocol& protocol);

enum class LrStaleness { kNone, kInverse };  // α₀, or α₀ / max(1, τ) per gradient
const char* LrStalenessName(LrStaleness rule);  // "none", "inverse"

struct LearningRate {
  double base = 0.05;  // α₀ > 0
  LrStaleness staleness = LrStaleness::kNone;
  double momentum = 0.0;  // server-side, in [0, 1)
  // Key `decay_epochs`: step decay, ascending epochs > 0 of the job's training set (all the
  // learners' samples together); at each the shards multiply the rate by `decay_factor`.
  std::vector<double> decay_epochs;
  double decay_factor = 0.1;  // key `decay_factor`, in (0, 1]
};
// Fashion-MNIST's training images: the training set's size when `limit_train` is not set.
inline constexpr int64_t kFashionMnistTrainImages = 60000;

struct SlowLearner {
  int learner = 0;     // index in [0, learners)
  double factor = 1;   // >= 1: the learner's steps take `factor` times as long
};

enum class BackendKind { kLocal, kMpi, kSlurm, kKubernetes };
const char* BackendKindName(BackendKind kind);  // "local", "mpi", "slurm", "kubernetes"
// The kind BackendKindName names; nullopt for any other text.
std::optional<BackendKind> ParseBackendKind(const std::string& name);

struct CheckpointSpec {
  std::string dir;  // resolved like `model` (relative to the job file's directory)
  absl::Duration every = absl::ZeroDuration();  // > 0
};

enum class NumberFormat { kFp32, kFixed16 };
const char* NumberFormatName(NumberFormat format);  // "fp32", "fixed16"

// TLS on every channel between the job's processes (server/tls.h). One certificate serves the
// shards and, with `mutual`, identifies the learners to them.
struct TlsSpec {
  std::string ca;    // key `ca`: PEM CA the shards' (and with mutual, the learners') certificates chain to
  std::string cert;  // key `cert`: PEM certificate for the job's hosts
  std::string key;   // key `key`: its PEM private key
  bool mutual = false;  // key `mutual`: shards require client certificates
};

// Key `precision`: where 16-bit fixed point <16 - FL, FL> with stochastic rounding replaces fp32.
struct PrecisionSpec {
  // Pushed gradients and pulled weights (half the bytes); FL chosen per chunk from its range.
  NumberFormat wire = NumberFormat::kFp32;
  // The shards' master weights, rounded after every update, in <16 - fl, fl>.
  NumberFormat weights = NumberFormat::kFp32;
  // The learners' dense-layer GEMMs (weights, gradients and errors in <16 - fl, fl>).
  NumberFormat compute = NumberFormat::kFp32;
  int fl = 12;  // key `fl`: an integer in [0, 15], for weights and compute
};
inline constexpr int kMaxSpecFractionalBits = 15;

// Key `bind`: where `orrery run` places the job's processes on this machine's cores.
enum class Binding {
  kNone,   // `none`: the operating system places them (and moves them)
  kCores,  // `cores`: each process, every thread of it, on one core (RunJobOptions::cpus)
};
const char* BindingName(Binding binding);  // "none", "cores"

// Every field is validated; defaults are those shown. Paths are absolute after parsing.
struct JobSpec {
  std::string name;        // required; [A-Za-z0-9][A-Za-z0-9._-]*, at most 63 characters
  std::string model_path;  // required key `model`; the file exists
  std::string data_dir = kDefaultDataDir;  // key `data`; existence is not checked here
  int servers = 1;         // S >= 1
  int learners = 1;        // L >= 1
  Protocol protocol;       // default hardsync
  LearningRate lr;
  int batch = 64;          // per learner, >= 1
  double epochs = 1;       // > 0; fractions allowed (0.5 = half a pass over the training set)
  uint64_t seed = 1;
  std::optional<double> target_accuracy;  // in (0, 1]
  std::vector<SlowLearner> slow_learners; // distinct learner indices
  std::optional<int64_t> limit_train;     // >= learners: every learner gets a non-empty slice
  std::optional<int64_t> limit_test;      // >= 1: evaluate on the first N test images only
  std::optional<absl::Duration> eval_every;  // key `eval_every_seconds`, > 0
  // Key `learner_timeout_seconds`, > 0: silence after which a learner is dropped from hardsync
  // and ssp accounting (servers default to 60 s).
  std::optional<absl::Duration> learner_timeout;
  BackendKind backend = BackendKind::kLocal;
  RestartPolicy restart;   // key `restart`: {max_restarts, backoff_seconds, max_backoff_seconds}
  std::optional<CheckpointSpec> checkpoint;  // key `checkpoint`: {dir, every_seconds}
  std::optional<TlsSpec> tls;  // key `tls`: {ca, cert, key, mutual}
  PrecisionSpec precision;  // key `precision`: {wire, weights, compute, fl}
  // Key `bind`. Only `orrery run` binds (it has the machine to itself); the scheduler daemon
  // refuses `cores` (its jobs share the cores), and mpirun and srun bind with their own flags.
  Binding bind = Binding::kNone;
};

// Parses a job spec from YAML text. Relative paths (model, data, checkpoint.dir) are resolved
// against `base_dir` first and the current directory second; `model` must name an existing file.
// Errors are INVALID_ARGUMENT naming the key: "lr.staleness: expected none or inverse, got
// 'inversee'". Unknown and duplicate keys are errors. Reads the filesystem only to find `model`.
absl::StatusOr<JobSpec> ParseJobSpec(const std::string& yaml, const std::string& base_dir);

// Reads and parses the file at `path`; relative paths in it are resolved against its directory.
// Errors are prefixed with `path`.
absl::StatusOr<JobSpec> LoadJobSpec(const std::string& path);

// A job spec is a short YAML text; anything longer is the wrong file.
inline constexpr size_t kMaxJobSpecBytes = 1 << 20;

// The text of the job spec file at `path`, checked to be a readable regular file of at most
// kMaxJobSpecBytes holding UTF-8 text; errors name the path and what is wrong with it.
absl::StatusOr<std::string> ReadJobSpecFile(const std::string& path);

}  // namespace orrery::scheduler
