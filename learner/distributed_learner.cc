#include "learner/distributed_learner.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/job_limits.h"
#include "base/status_macros.h"
#include "learner/compute_threads.h"
#include "learner/model.h"
#include "learner/model_graph.h"
#include "learner/model_spec.h"
#include "nlohmann/json.hpp"
#include "server/client.h"

namespace orrery::learner {
namespace {

using Clock = std::chrono::steady_clock;

double ToSeconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double SecondsSince(Clock::time_point t0) { return ToSeconds(Clock::now() - t0); }

// Tagged JSON lines: on stdout, flushed so the supervisor sees each at once, and appended to the
// events file when there is one (one write per line, so a line is never torn).
class Events {
 public:
  static absl::StatusOr<std::unique_ptr<Events>> Open(const std::string& path) {
    auto events = std::unique_ptr<Events>(new Events(path));
    if (!path.empty()) {
      events->fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (events->fd_ < 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("--events-file: cannot open ", path, ": ", std::strerror(errno)));
      }
    }
    return events;
  }
  ~Events() {
    if (fd_ >= 0) ::close(fd_);
  }

  void Emit(const char* tag, const nlohmann::json& body) {
    const std::string line = absl::StrCat(tag, " ", body.dump(), "\n");
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
    if (fd_ < 0) return;
    ssize_t n;
    do {
      n = ::write(fd_, line.data(), line.size());
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(line.size()) && !warned_) {
      warned_ = true;  // the run goes on; only a restarted scheduler would miss the line
      LOG(WARNING) << "--events-file " << path_ << ": a line was not written"
                   << (n < 0 ? absl::StrCat(": ", std::strerror(errno)) : std::string(" whole"));
    }
  }

 private:
  explicit Events(std::string path) : path_(std::move(path)) {}
  std::string path_;
  int fd_ = -1;
  bool warned_ = false;
};

absl::StatusOr<std::unique_ptr<Model>> BuildModel(const LearnerOptions& o) {
  ASSIGN_OR_RETURN(ModelSpec spec, LoadModelSpec(o.model_path));
  // Every learner starts from the same seeded weights but draws its own rounding noise.
  PrecisionOptions precision = o.precision;
  precision.fixed.stream_salt = o.evaluator ? 1 : static_cast<uint64_t>(o.index) + 2;
  return Model::Create(spec, o.seed, precision);
}

absl::Status CheckInputShape(const Model& model, const Dataset& data, const std::string& path) {
  const ModelSpec& spec = model.spec();
  if (spec.input_channels != 1 || spec.input_height != data.rows || spec.input_width != data.cols) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: input is %dx%dx%d but the data set's images are 1x%dx%d", path, spec.input_channels,
        spec.input_height, spec.input_width, data.rows, data.cols));
  }
  return absl::OkStatus();
}

server::ClientOptions MakeClientOptions(const LearnerOptions& o, Model& model, int learner_id) {
  server::ClientOptions c;
  c.endpoints = o.servers;
  c.job_id = o.job_id;
  c.token = o.token;
  c.learner_id = learner_id;
  c.tls = o.tls;
  for (const TensorInfo& t : model.params().infos()) {
    c.tensors.push_back({t.name, static_cast<uint64_t>(t.size)});
  }
  c.chunk_size = o.chunk_size;
  c.rpc_timeout = o.rpc_timeout;
  c.pull_timeout = o.pull_timeout;
  c.retry_budget = o.retry_budget;
  c.wire = o.wire;
  c.wire_fl = o.wire_fl;
  return c;
}

nlohmann::json StatsJson(const server::PsStats& stats) {
  const server::ShardStats& t = stats.total;
  nlohmann::json versions = nlohmann::json::array();
  for (const auto& s : stats.shards) versions.push_back(s.version);
  return {{"updates_applied", t.version},
          {"shard_versions", versions},
          {"gradients_applied", t.gradients_applied},
          {"gradients_rejected", t.gradients_rejected},
          {"gradients_rejected_nonfinite", t.gradients_rejected_nonfinite},
          {"pushes", t.pushes},
          {"pulls", t.pulls},
          {"samples_applied", t.samples_applied},
          {"active_learners", t.active_learners},
          {"train_loss_recent", t.train_loss_recent},
          {"staleness",
           {{"mean", t.staleness_mean()},
            {"max", t.staleness_max},
            {"histogram", t.staleness_histogram}}},
          {"gradient_age_seconds", {{"mean", t.gradient_age_mean()}, {"max", t.gradient_age_max}}}};
}

}  // namespace

absl::Status ValidateLearnerOptions(const LearnerOptions& o) {
  if (o.servers.empty()) return absl::InvalidArgumentError("--servers: at least one host:port is required");
  for (const std::string& s : o.servers) {
    if (s.empty() || s.find(':') == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--servers: expected host:port, got '", s, "'"));
    }
  }
  if (o.model_path.empty()) return absl::InvalidArgumentError("--model: required");
  if (o.learners < 1) return absl::InvalidArgumentError(absl::StrFormat("--learners: must be >= 1, got %d", o.learners));
  if (o.index < 0 || o.index >= o.learners) {
    return absl::InvalidArgumentError(absl::StrFormat("--index: must be in [0, %d), got %d", o.learners, o.index));
  }
  if (o.learners > kMaxLearners) {
    return absl::InvalidArgumentError(absl::StrFormat("--learners: must be <= %d, got %d", kMaxLearners, o.learners));
  }
  if (o.batch < 1 || o.batch > kMaxBatch) {
    return absl::InvalidArgumentError(absl::StrFormat("--batch: must be in [1, %d], got %d", kMaxBatch, o.batch));
  }
  if (!(o.epochs > 0) || o.epochs > kMaxEpochs) {
    return absl::InvalidArgumentError(absl::StrFormat("--epochs: must be in (0, %g], got %g", kMaxEpochs, o.epochs));
  }
  if (o.limit_train < 0) return absl::InvalidArgumentError("--limit-train: must be >= 0");
  if (o.limit_test < 0) return absl::InvalidArgumentError("--limit-test: must be >= 0");
  if (!(o.slow_factor >= 1) || o.slow_factor > kMaxSlowFactor) {
    return absl::InvalidArgumentError(absl::StrFormat("--slow: must be in [1, %g], got %g", kMaxSlowFactor, o.slow_factor));
  }
  if (o.threads < 0 || o.threads > 1024) return absl::InvalidArgumentError(absl::StrFormat("--threads: must be in [0, 1024], got %d", o.threads));
  if (o.chunk_size < 1) return absl::InvalidArgumentError("--chunk-size: must be >= 1");
  if (!(o.eval_every_seconds > 0)) return absl::InvalidArgumentError("--eval-every: must be > 0 seconds");
  if (!(o.report_every_seconds > 0)) return absl::InvalidArgumentError("--report-every: must be > 0 seconds");
  if (o.wire != proto::FP32 && o.wire != proto::FIXED16) {
    return absl::InvalidArgumentError("--wire: must be fp32 or fixed16");
  }
  if (o.wire_fl.has_value() && (*o.wire_fl < 0 || *o.wire_fl > quant::kMaxFractionalBits)) {
    return absl::InvalidArgumentError(absl::StrFormat("--wire-fl: must be in [0, %d], got %d",
                                                      quant::kMaxFractionalBits, *o.wire_fl));
  }
  return ValidatePrecision(o.precision);
}

absl::Status RunLearner(const LearnerOptions& o) {
  RETURN_IF_ERROR(ValidateLearnerOptions(o));
  ASSIGN_OR_RETURN(std::unique_ptr<Events> events, Events::Open(o.events_path));
  const int threads = SetComputeThreads(o.threads);

  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, BuildModel(o));
  Dataset slice;
  {
    ASSIGN_OR_RETURN(Dataset full, LoadFashionMnist(o.data_dir, Split::kTrain, o.limit_train));
    RETURN_IF_ERROR(CheckInputShape(*model, full, o.model_path));
    ASSIGN_OR_RETURN(slice, SliceDataset(full, o.index, o.learners));
  }
  if (slice.count < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--index %d of --learners %d: the slice of the training set is empty", o.index, o.learners));
  }

  // The learner's id is its index: a learner restarted after a crash, or started again by
  // `orrery run --resume`, rejoins as itself and continues from the clock the shards kept.
  ASSIGN_OR_RETURN(std::unique_ptr<server::PsClient> ps,
                   server::PsClient::Connect(MakeClientOptions(o, *model, o.index)));
  events->Emit("ORRERY_LEARNER_JOINED", {{"learner", ps->learner_id()},
                                         {"index", o.index},
                                         {"start_clock", ps->start_clock()},
                                         {"examples", slice.count},
                                         {"threads", threads}});
  // Every learner offers the same seeded weights; the first Init each shard sees wins.
  RETURN_IF_ERROR(ps->Init(model->params().flat()));

  const int64_t sample = model->input_size();
  const int batch = static_cast<int>(std::min<int64_t>(o.batch, slice.count));
  const int64_t steps_per_epoch = std::max<int64_t>(1, slice.count / batch);
  const int64_t steps =
      std::max<int64_t>(1, static_cast<int64_t>(std::llround(o.epochs * steps_per_epoch)));
  std::vector<float> images(static_cast<size_t>(batch * sample));
  std::vector<int32_t> labels(batch);
  std::vector<int64_t> order;
  int64_t order_epoch = -1;

  const auto t0 = Clock::now();
  auto last_report = t0;
  int64_t done_steps = 0, images_done = 0, dropped = 0;
  double loss_window = 0;
  int64_t window_steps = 0, window_images = 0;
  auto window0 = t0;
  // Wall time inside Pull, the step's compute (and a straggler's stretch), and Push.
  Clock::duration pull_time{}, compute_time{}, push_time{};
  for (int64_t t = ps->start_clock(); t < steps; ++t) {
    const auto step0 = Clock::now();
    const int64_t epoch = t / steps_per_epoch;
    if (epoch != order_epoch) {
      order = ShuffledOrder(slice.count, o.seed * 1000003ULL + static_cast<uint64_t>(o.index) * 7919ULL + epoch);
      order_epoch = epoch;
    }
    const int64_t first = (t % steps_per_epoch) * batch;
    for (int i = 0; i < batch; ++i) {
      const int64_t idx = order[first + i];
      std::copy_n(slice.images.data() + idx * sample, sample, images.data() + i * sample);
      labels[i] = slice.labels[idx];
    }

    const auto pull0 = Clock::now();
    RETURN_IF_ERROR(ps->Pull(t, model->params().flat()));
    const auto compute0 = Clock::now();
    pull_time += compute0 - pull0;
    for (const server::PsClient::ShardRestart& r : ps->TakeShardRestarts()) {
      events->Emit("ORRERY_LEARNER_SHARD_RESTART", {{"learner", ps->learner_id()},
                                                    {"shard", r.shard},
                                                    {"version_before", r.version_before},
                                                    {"version_after", r.version_after},
                                                    {"updates_lost", r.version_before - r.version_after}});
    }
    ASSIGN_OR_RETURN(StepResult r, model->TrainStep(images, labels));
    if (!std::isfinite(r.loss)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "learner %d: training diverged at step %d (loss %g); lower lr.base or use the inverse "
          "staleness rule", ps->learner_id(), t, r.loss));
    }
    if (o.slow_factor > 1) {
      // A straggler: its work (the batch's preparation and compute) takes slow_factor times as
      // long, slept before the push, so its gradient is as stale as a slow machine's would be.
      // Not the pull: under hardsync or ssp a pull waits for the other learners, and stretching
      // that wait too would compound (every learner slow: each step twice the last at factor 3).
      std::this_thread::sleep_for(((pull0 - step0) + (Clock::now() - compute0)) * (o.slow_factor - 1));
    }
    const auto push0 = Clock::now();
    compute_time += push0 - compute0;
    absl::Status pushed = ps->Push(t, model->grads().flat(), static_cast<uint32_t>(batch),
                                   static_cast<float>(r.loss));
    push_time += Clock::now() - push0;
    if (absl::IsFailedPrecondition(pushed)) {
      // The shards dropped this gradient (e.g. this learner was timed out of a hardsync step);
      // continue from the clock they now expect.
      ++dropped;
      t = std::max<int64_t>(t, ps->start_clock()) - 1;
      continue;
    }
    RETURN_IF_ERROR(pushed);
    ++done_steps;
    images_done += batch;
    loss_window += r.loss;
    ++window_steps;
    window_images += batch;
    if (done_steps == 1 || SecondsSince(last_report) >= o.report_every_seconds) {
      events->Emit("ORRERY_LEARNER", {{"learner", ps->learner_id()},
                                      {"index", o.index},
                                      {"step", t + 1},
                                      {"steps", steps},
                                      {"loss", loss_window / window_steps},
                                      {"images_per_second", window_images / std::max(SecondsSince(window0), 1e-9)}});
      last_report = Clock::now();
      window0 = last_report;
      loss_window = 0;
      window_steps = window_images = 0;
    }
  }
  const double seconds = SecondsSince(t0);
  absl::Status left = ps->Leave();
  events->Emit("ORRERY_LEARNER_DONE", {{"learner", ps->learner_id()},
                                       {"index", o.index},
                                       {"steps", done_steps},
                                       {"dropped", dropped},
                                       {"images", images_done},
                                       {"seconds", seconds},
                                       {"images_per_second", images_done / std::max(seconds, 1e-9)},
                                       {"wire", o.wire == proto::FIXED16 ? "fixed16" : "fp32"},
                                       {"pushes", ps->wire_stats().pushes},
                                       {"push_bytes", ps->wire_stats().push_bytes},
                                       {"pulls", ps->wire_stats().pulls},
                                       {"pull_bytes", ps->wire_stats().pull_bytes},
                                       {"connection_resets", ps->wire_stats().connection_resets},
                                       {"pull_seconds", ToSeconds(pull_time)},
                                       {"compute_seconds", ToSeconds(compute_time)},
                                       {"push_seconds", ToSeconds(push_time)}});
  return left;
}

absl::Status RunEvaluator(const LearnerOptions& o) {
  RETURN_IF_ERROR(ValidateLearnerOptions(o));
  // Block the stop signals before gRPC starts its threads, so every thread inherits the mask and
  // the signals wait for sigtimedwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  SetComputeThreads(o.threads);
  ASSIGN_OR_RETURN(std::unique_ptr<Events> events, Events::Open(o.events_path));

  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, BuildModel(o));
  ASSIGN_OR_RETURN(Dataset test, LoadFashionMnist(o.data_dir, Split::kTest, o.limit_test));
  RETURN_IF_ERROR(CheckInputShape(*model, test, o.model_path));
  ASSIGN_OR_RETURN(std::unique_ptr<server::PsClient> ps,
                   server::PsClient::Connect(MakeClientOptions(o, *model, -2)));
  RETURN_IF_ERROR(ps->Init(model->params().flat()));

  const auto t0 = Clock::now();
  auto next = t0;
  for (;;) {
    bool final = false;
    const double wait = std::chrono::duration<double>(next - Clock::now()).count();
    if (wait > 0) {
      timespec ts;
      ts.tv_sec = static_cast<time_t>(wait);
      ts.tv_nsec = static_cast<long>((wait - ts.tv_sec) * 1e9);
      final = sigtimedwait(&stop_signals, nullptr, &ts) > 0;
    } else {
      siginfo_t info;
      timespec zero{0, 0};
      final = sigtimedwait(&stop_signals, &info, &zero) > 0;
    }
    next = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(o.eval_every_seconds));
    // Stats first, then weights: the accuracy belongs to weights at least this new.
    ASSIGN_OR_RETURN(server::PsStats stats, ps->Stats());
    RETURN_IF_ERROR(ps->Pull(0, model->params().flat()));
    ASSIGN_OR_RETURN(EvalResult eval, model->Evaluate(test.images, test.labels, kEvalBatch));
    events->Emit("ORRERY_EVAL", {{"seconds", SecondsSince(t0)},
                                 {"test_accuracy", static_cast<double>(eval.correct) / std::max<int64_t>(1, eval.count)},
                                 {"test_loss", eval.loss_sum / std::max<int64_t>(1, eval.count)},
                                 {"test_images", eval.count},
                                 {"final", final},
                                 {"stats", StatsJson(stats)}});
    if (final) return absl::OkStatus();
  }
}

}  // namespace orrery::learner
