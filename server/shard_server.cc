#include "server/shard_server.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <glog/logging.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "base/job_limits.h"
#include "base/status_macros.h"
#include "server/checkpoint.h"
#include "server/sharding.h"
#include "server/tls.h"

namespace orrery::server {

absl::StatusOr<std::vector<float>> ReadFloatFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open weights file ", path));
  const std::streamsize size = in.tellg();
  if (size % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights file ", path, " has ", size, " bytes, not a whole number of float32 values"));
  }
  std::vector<float> values(static_cast<size_t>(size / 4));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(values.data()), size)) {
    return absl::DataLossError(absl::StrCat("short read from weights file ", path));
  }
  return values;
}

absl::StatusOr<std::unique_ptr<ShardServer>> ShardServer::Start(const ServerOptions& options) {
  if (options.num_shards < 1 || options.num_shards > kMaxServers) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shards must be in [1, ", kMaxServers, "], got ", options.num_shards));
  }
  if (options.shard_index < 0 || options.shard_index >= options.num_shards) {
    return absl::InvalidArgumentError(absl::StrCat("--shard ", options.shard_index,
                                                   " is not in [0, ", options.num_shards, ")"));
  }
  if (!(options.learner_timeout_seconds > 0) || !std::isfinite(options.learner_timeout_seconds)) {
    return absl::InvalidArgumentError("--learner-timeout must be a positive number of seconds");
  }
  if (options.max_message_bytes < 1024 || options.max_message_bytes > INT32_MAX) {
    return absl::InvalidArgumentError("--max-message-bytes must be in [1024, 2^31)");
  }
  if (!(options.checkpoint_every_seconds > 0) || !std::isfinite(options.checkpoint_every_seconds)) {
    return absl::InvalidArgumentError("--checkpoint-every must be a positive number of seconds");
  }
  if (options.resume && options.checkpoint_dir.empty()) {
    return absl::InvalidArgumentError("--resume needs --checkpoint-dir");
  }
  if (!options.initial_weights_path.empty() && options.layout_path.empty()) {
    return absl::InvalidArgumentError("--init-weights needs --layout");
  }
  if (options.weights != "fp32" && options.weights != "fixed16") {
    return absl::InvalidArgumentError(
        absl::StrCat("--weights must be fp32 or fixed16, got '", options.weights, "'"));
  }
  if (options.weights_fl < 0 || options.weights_fl > quant::kMaxFractionalBits) {
    return absl::InvalidArgumentError(absl::StrCat("--weights-fl must be in [0, ",
                                                   quant::kMaxFractionalBits, "], got ",
                                                   options.weights_fl));
  }
  if (options.weights_rounding != "stochastic" && options.weights_rounding != "nearest") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--weights-rounding must be stochastic or nearest, got '", options.weights_rounding, "'"));
  }
  ShardConfig config;
  if (options.weights == "fixed16") {
    config.fixed_weights = FixedWeights{quant::FixedFormat{options.weights_fl},
                                        options.weights_rounding == "nearest"
                                            ? quant::Rounding::kNearest
                                            : quant::Rounding::kStochastic};
  }
  config.shard_index = static_cast<uint32_t>(options.shard_index);
  config.num_shards = static_cast<uint32_t>(options.num_shards);
  config.job_id = options.job_id;
  config.token = options.token;
  config.protocol = options.protocol;
  config.num_learners = options.learners;
  config.lr = options.lr;
  config.staleness_rule = options.staleness_rule;
  config.momentum = options.momentum;
  config.lr_decay_at_samples = options.lr_decay_at_samples;
  config.lr_decay_factor = options.lr_decay_factor;
  config.learner_timeout = absl::Seconds(options.learner_timeout_seconds);
  if (!options.layout_path.empty()) {
    ASSIGN_OR_RETURN(config.layout, ReadLayoutFile(options.layout_path));
  }

  std::unique_ptr<ShardServer> s(new ShardServer());
  ASSIGN_OR_RETURN(s->shard_, ParameterShard::Create(config, &s->clock_));
  if (!options.checkpoint_dir.empty()) {
    s->checkpoint_path_ = CheckpointPath(options.checkpoint_dir, options.shard_index);
    s->checkpoint_every_ = absl::Seconds(options.checkpoint_every_seconds);
    // Two shards writing one checkpoint (two jobs given the same checkpoint.dir) would each
    // overwrite the other's and resume from a stranger's weights.
    std::error_code ec;
    std::filesystem::create_directories(options.checkpoint_dir, ec);
    ASSIGN_OR_RETURN(s->checkpoint_lock_,
                     FileLock::Acquire(s->checkpoint_path_ + ".lock", absl::StrCat("checkpoint ", s->checkpoint_path_),
                                       "another shard", "does another running job have the same checkpoint dir?"));
  }
  if (options.resume) {
    absl::StatusOr<proto::ShardCheckpoint> checkpoint = ReadCheckpointFile(s->checkpoint_path_);
    if (checkpoint.ok()) {
      absl::Status restored = s->shard_->Restore(*checkpoint);
      if (!restored.ok()) {
        return absl::Status(restored.code(), absl::StrCat("checkpoint ", s->checkpoint_path_,
                                                          " refused: ", restored.message()));
      }
      s->restored_ = Restored{checkpoint->version(), checkpoint->samples_applied()};
      absl::MutexLock lock(&s->checkpoint_mu_);
      s->checkpointed_version_ = checkpoint->version();
      s->next_checkpoint_ = absl::Now() + s->checkpoint_every_;
      LOG(INFO) << "shard " << options.shard_index << ": resumed from " << s->checkpoint_path_
                << " at version " << checkpoint->version();
    } else if (absl::IsNotFound(checkpoint.status())) {
      LOG(INFO) << "shard " << options.shard_index << ": no checkpoint at " << s->checkpoint_path_
                << " yet; starting fresh";
    } else {
      return checkpoint.status();
    }
  }
  if (!options.initial_weights_path.empty() && !s->restored_) {
    ASSIGN_OR_RETURN(std::vector<float> flat, ReadFloatFile(options.initial_weights_path));
    RETURN_IF_ERROR(s->shard_->InitializeFromFlat(flat));
  }
  s->service_ = std::make_unique<PsService>(s->shard_.get());

  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   MakeServerCredentials(TlsFiles{options.tls_client_ca, options.tls_cert, options.tls_key}));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, credentials, &port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address, " (in use or not local?)"));
  }
  const size_t colon = options.listen_address.rfind(':');
  s->address_ = absl::StrCat(options.listen_address.substr(0, colon), ":", port);

  if (!options.metrics_listen.empty()) {
    try {
      s->exposer_ = std::make_unique<prometheus::Exposer>(options.metrics_listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("--metrics-listen ", options.metrics_listen,
                                                 ": cannot listen (", e.what(), ")"));
    }
    s->metrics_ = std::make_shared<ShardMetrics>(s->shard_.get());
    s->exposer_->RegisterCollectable(s->metrics_);
    const std::vector<int> ports = s->exposer_->GetListeningPorts();
    const size_t mcolon = options.metrics_listen.rfind(':');
    s->metrics_address_ = absl::StrCat(options.metrics_listen.substr(0, mcolon), ":",
                                       ports.empty() ? 0 : ports.front());
  }
  // One thread expires silent learners and writes periodic checkpoints: it wakes often enough
  // for both (a checkpoint period under a second was stretched to a second before).
  absl::Duration tick = config.learner_timeout / 4;
  if (!s->checkpoint_path_.empty()) tick = std::min(tick, s->checkpoint_every_);
  const absl::Duration period = std::clamp(tick, absl::Milliseconds(10), absl::Seconds(1));
  s->expiry_thread_ = std::thread([raw = s.get(), period] { raw->ExpiryLoop(period); });
  LOG(INFO) << "shard " << options.shard_index << "/" << options.num_shards << " of job '"
            << options.job_id << "' serving on " << s->address_ << " (" << options.protocol
            << ", λ=" << options.learners << ", weights " << options.weights
            << (options.weights == "fixed16" ? absl::StrCat(" FL ", options.weights_fl, " ",
                                                            options.weights_rounding)
                                             : std::string())
            << ")";
  return s;
}

void ShardServer::ExpiryLoop(absl::Duration period) {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), period);
    if (stopping_) break;
    mu_.Unlock();
    shard_->ExpireSilentLearners();
    MaybeCheckpoint();
    mu_.Lock();
  }
}

void ShardServer::MaybeCheckpoint() {
  if (checkpoint_path_.empty()) return;
  {
    absl::MutexLock lock(&checkpoint_mu_);
    // The first checkpoint as soon as the weights are set, then on the period.
    if (checkpointed_version_.has_value() && absl::Now() < next_checkpoint_) return;
  }
  absl::Status st = WriteCheckpoint();
  if (!st.ok() && !absl::IsFailedPrecondition(st)) LOG(ERROR) << st;
}

absl::Status ShardServer::WriteCheckpoint() {
  if (checkpoint_path_.empty()) return absl::OkStatus();
  absl::MutexLock lock(&checkpoint_mu_);
  absl::StatusOr<proto::ShardCheckpoint> state = shard_->Checkpoint();
  if (!state.ok()) return state.status();  // FAILED_PRECONDITION: no weights yet
  next_checkpoint_ = absl::Now() + checkpoint_every_;
  if (checkpointed_version_ == state->version()) return absl::OkStatus();
  if (absl::Status st = WriteCheckpointFile(checkpoint_path_, *state); !st.ok()) {
    if (on_checkpoint_) on_checkpoint_(st);
    return st;
  }
  checkpointed_version_ = state->version();
  if (on_checkpoint_) on_checkpoint_(state->version());
  LOG(INFO) << "checkpoint written: " << checkpoint_path_ << " at version " << state->version();
  return absl::OkStatus();
}

void ShardServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (expiry_thread_.joinable()) expiry_thread_.join();
  if (shard_) shard_->Shutdown();  // answers parked pulls so the server can drain
  if (service_) service_->Shutdown();  // open push streams would hold the server's Shutdown
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }
  exposer_.reset();  // no scrape may read the shard from here on
  // A clean stop keeps everything: the last checkpoint holds the final state.
  if (shard_) {
    absl::Status st = WriteCheckpoint();
    if (!st.ok() && !absl::IsFailedPrecondition(st)) LOG(ERROR) << "final " << st;
  }
}

ShardServer::~ShardServer() { Shutdown(); }

}  // namespace orrery::server
