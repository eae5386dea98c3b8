// A running parameter-server shard: the ParameterShard, its gRPC server and the thread that
// drops silent learners. Used by RunServer and by tests that run shards in-process.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/file_lock.h"
#include "server/clock.h"
#include "server/parameter_shard.h"
#include "server/ps_service.h"
#include "prometheus/exposer.h"
#include "server/server_options.h"
#include "server/shard_metrics.h"

namespace orrery::server {

// Thread-safe. Shutdown() (or the destructor) stops serving: parked pulls are answered with
// UNAVAILABLE, in-flight calls get a short grace period, the expiry thread is joined.
class ShardServer {
 public:
  // Validates `options`, loads the layout and initial weights when given, binds and serves.
  // Returns once the server accepts calls.
  static absl::StatusOr<std::unique_ptr<ShardServer>> Start(const ServerOptions& options);
  ~ShardServer();

  // host:port actually bound (the OS-chosen port when the option said 0).
  const std::string& address() const { return address_; }
  ParameterShard& shard() { return *shard_; }
  // What --resume read from the checkpoint: its version and the training samples behind its
  // weights (unset when the shard started fresh).
  struct Restored {
    uint64_t version = 0;
    uint64_t samples = 0;
  };
  const std::optional<Restored>& restored() const { return restored_; }
  // host:port of the Prometheus /metrics endpoint ("" without --metrics-listen).
  const std::string& metrics_address() const { return metrics_address_; }
  // Writes a checkpoint now (when checkpoints are configured and the shard has weights).
  absl::Status WriteCheckpoint();
  // Called (on the writing thread) with the version of every checkpoint written, or with the
  // error of every write that failed (the shard serves on: its last good checkpoint stays).
  void OnCheckpoint(std::function<void(absl::StatusOr<uint64_t> version)> callback) {
    absl::MutexLock lock(&checkpoint_mu_);
    on_checkpoint_ = std::move(callback);
  }
  // Idempotent.
  void Shutdown();

 private:
  ShardServer() = default;
  void ExpiryLoop(absl::Duration period);
  void MaybeCheckpoint();

  RealClock clock_;
  std::unique_ptr<ParameterShard> shard_;
  std::unique_ptr<PsService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::shared_ptr<ShardMetrics> metrics_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string metrics_address_;
  std::string checkpoint_path_;  // empty: no checkpoints
  std::optional<FileLock> checkpoint_lock_;  // held while this shard may write checkpoint_path_
  absl::Duration checkpoint_every_;
  std::optional<Restored> restored_;
  absl::Mutex checkpoint_mu_;  // one writer at a time
  std::optional<uint64_t> checkpointed_version_ ABSL_GUARDED_BY(checkpoint_mu_);
  std::function<void(absl::StatusOr<uint64_t>)> on_checkpoint_ ABSL_GUARDED_BY(checkpoint_mu_);
  absl::Time next_checkpoint_ ABSL_GUARDED_BY(checkpoint_mu_);
  std::thread expiry_thread_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

// Reads a raw little-endian float32 file.
absl::StatusOr<std::vector<float>> ReadFloatFile(const std::string& path);

}  // namespace orrery::server
