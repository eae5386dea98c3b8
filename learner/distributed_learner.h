// The `orrery learner` role: one learner process of a distributed job. It registers with every
// parameter-server shard, then loops pull → compute (the foundation's oneDNN layers) → push over
// its own slice of the training set. The evaluator variant is an observer: it pulls the current
// weights every few seconds and scores them on the test set, without taking part in the
// protocol, so evaluation never stalls training.
//
// Both report on stdout with one machine-readable line per event, a tag then a JSON object:
//   ORRERY_LEARNER_JOINED {"learner":<id the shards assigned>,"index":..,"start_clock":..,
//                          "examples":..,"threads":<OpenMP threads it computes on>}
//   ORRERY_LEARNER {"learner":..,"step":..,"steps":..,"loss":..,"images_per_second":..}
//   ORRERY_LEARNER_DONE {"learner":..,"steps":..,"images":..,"seconds":..,"images_per_second":..,
//                        "wire":"fp32"|"fixed16","pushes":..,"push_bytes":..,"pulls":..,"pull_bytes":..}
//   (push_bytes and pull_bytes: serialised Push requests and Pull responses, all shards)
//   ORRERY_EVAL {"seconds":..,"test_accuracy":..,"test_loss":..,"final":bool,"stats":{...}}
// `orrery run` and the scheduler parse these lines; people can read them too.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "learner/fashion_mnist.h"
#include "server/tls.h"
#include "learner/precision.h"
#include "parameter_server.pb.h"

namespace orrery::learner {

struct LearnerOptions {
  std::vector<std::string> servers;  // --servers: host:port of shard i at index i
  std::string job_id = "default";    // --job
  std::string token;                 // --token / ORRERY_TOKEN
  server::TlsFiles tls;              // --tls-ca, --tls-cert, --tls-key
  std::string model_path;            // --model
  std::string data_dir = kDefaultFashionMnistDir;  // --data
  int index = 0;                     // --index: this learner's data slice, 0 <= index < learners
  int learners = 1;                  // --learners: L, the number of slices
  int batch = 64;                    // --batch
  double epochs = 1;                 // --epochs: passes over this learner's slice
  uint64_t seed = 1;                 // --seed: initial weights (same on every learner) and order
  int64_t limit_train = 0;           // --limit-train: first N training images before slicing
  int64_t limit_test = 0;            // --limit-test (evaluator)
  double slow_factor = 1;            // --slow: each step's work (not its pull) takes this many times as long
  int threads = 1;                   // --threads: OpenMP threads for compute (0 = one per usable core, SetComputeThreads)
  uint32_t chunk_size = 16384;       // --chunk-size: elements per chunk (the job must agree)
  bool evaluator = false;            // --evaluator
  double eval_every_seconds = 10;    // --eval-every (evaluator)
  double report_every_seconds = 2;   // --report-every: ORRERY_LEARNER progress lines
  // --events-file: every tagged line (ORRERY_EVAL, ORRERY_LEARNER_DONE, ...) is also appended
  // here, so that a scheduler restarted after a crash, which no longer reads our stdout, can
  // still learn how the process ended. "" = stdout only.
  std::string events_path;
  absl::Duration rpc_timeout = absl::Seconds(30);    // --rpc-timeout
  absl::Duration pull_timeout = absl::Minutes(10);   // --pull-timeout
  absl::Duration retry_budget = absl::Seconds(60);   // --retry-budget
  // --precision, --fl, --activation-fl, --rounding: the arithmetic of the dense layers, as in
  // `orrery train` (precision.compute). The master weights live on the shards (--weights there).
  PrecisionOptions precision;
  // --wire fp32 | fixed16: the encoding of pushes and pulls (precision.wire); --wire-fl: FL of
  // the pushed gradients (unset: per chunk from its range).
  proto::Encoding wire = proto::FP32;
  std::optional<int> wire_fl;
};

// Checks the options (errors name the flag). Pure.
absl::Status ValidateLearnerOptions(const LearnerOptions& options);

// Runs a learner to the end of its epochs and leaves the job. Errors: bad options, spec or data;
// shards unreachable or refusing (their status, with the shard named); training diverged.
absl::Status RunLearner(const LearnerOptions& options);

// Runs the evaluator until SIGTERM or SIGINT, then evaluates once more (marked "final") and
// returns. Call from the main thread before any other thread starts: it blocks those signals so
// that it can wait for them between evaluations.
absl::Status RunEvaluator(const LearnerOptions& options);

}  // namespace orrery::learner
