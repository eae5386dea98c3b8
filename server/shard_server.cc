#include "server/shard_server.h"

#include <chrono>
#include <cmath>
#include <fstream>

#include <glog/logging.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/sharding.h"

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
  if (options.num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shards must be at least 1, got ", options.num_shards));
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
  config.learner_timeout = absl::Seconds(options.learner_timeout_seconds);
  if (!options.layout_path.empty()) {
    ASSIGN_OR_RETURN(config.layout, ReadLayoutFile(options.layout_path));
  }

  std::unique_ptr<ShardServer> s(new ShardServer());
  ASSIGN_OR_RETURN(s->shard_, ParameterShard::Create(config, &s->clock_));
  if (!options.initial_weights_path.empty()) {
    ASSIGN_OR_RETURN(std::vector<float> flat, ReadFloatFile(options.initial_weights_path));
    RETURN_IF_ERROR(s->shard_->InitializeFromFlat(flat));
  }
  s->service_ = std::make_unique<PsService>(s->shard_.get());

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(), &port);
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

  const absl::Duration period =
      std::clamp(config.learner_timeout / 4, absl::Milliseconds(10), absl::Seconds(1));
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
    mu_.Lock();
  }
}

void ShardServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (expiry_thread_.joinable()) expiry_thread_.join();
  if (shard_) shard_->Shutdown();  // answers parked pulls so the server can drain
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }
}

ShardServer::~ShardServer() { Shutdown(); }

}  // namespace orrery::server
