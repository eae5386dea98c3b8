// One parameter-server shard's complete behaviour, without any network: credentials, the model
// layout, validation of every request, the store, the sync protocol, the learning-rate rule and
// the statistics. The gRPC service is a thin adapter over this class; tests drive it directly.
//
// Pulls never block a thread. Pull() either answers at once or parks the request and returns a
// ticket; a parked pull is answered later by whichever call makes it ready (Push, Register,
// Leave, Init, ExpireSilentLearners, CancelPull, Shutdown) on that caller's thread, after the
// shard's lock is released. Every PullDone is called exactly once.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "checkpoint.pb.h"
#include "parameter_server.pb.h"
#include "server/clock.h"
#include "server/lr_rule.h"
#include "server/push_decoder.h"
#include "server/shard_store.h"
#include "server/sharding.h"
#include "server/staleness_stats.h"
#include "server/sync_protocol.h"

namespace orrery::server {

struct ShardConfig {
  uint32_t shard_index = 0;
  uint32_t num_shards = 1;
  std::string job_id;
  std::string token;                         // empty: requests need no token
  std::optional<proto::ModelLayout> layout;  // unset: the first Register defines it
  std::string protocol = "async";            // hardsync | softsync:N | async | ssp:S
  int num_learners = 1;                      // λ
  float lr = 0.01f;                          // α₀
  std::string staleness_rule = "none";       // none | inverse
  float momentum = 0.0f;                     // server-side momentum μ (0 = plain SGD)
  // Step decay: once the shard has applied the gradients of lr_decay_at_samples[i] training
  // samples (StatsResponse.samples_applied), every rate is multiplied by lr_decay_factor once
  // more. Ascending, > 0; empty: no decay. Factor in (0, 1].
  std::vector<uint64_t> lr_decay_at_samples;
  float lr_decay_factor = 0.1f;
  // Unset: float weights. Set: fixed16 master weights in this format (FL in
  // [0, quant::kMaxFractionalBits]), rounded after every update (see shard_store.h).
  std::optional<FixedWeights> fixed_weights;
  absl::Duration learner_timeout = absl::Seconds(60);
};

// A snapshot of everything a request may change, for tests that check a rejected request
// changed nothing. Rejection counters are deliberately left out.
struct ShardState {
  bool has_layout = false;
  bool initialized = false;
  uint64_t version = 0;
  std::vector<float> weights;
  std::vector<float> accumulator;
  std::vector<float> velocity;
  std::map<int, SyncProtocol::Learner> learners;
  int64_t hardsync_step = 0;
  int pending = 0;
  std::vector<uint64_t> pending_staleness;
  uint64_t pending_samples = 0;
  StalenessStats staleness;
  uint64_t gradients_applied = 0;
  uint64_t samples_applied = 0;
  uint64_t pushes = 0;
  bool operator==(const ShardState&) const = default;
};

// Thread-safe: every method may be called from any thread.
class ParameterShard {
 public:
  using PullDone = absl::AnyInvocable<void(absl::StatusOr<PullAnswer>) &&>;
  using Ticket = uint64_t;  // 0: the pull was answered (or refused) before Pull returned

  // `clock` is borrowed and must outlive the shard.
  static absl::StatusOr<std::unique_ptr<ParameterShard>> Create(ShardConfig config, Clock* clock);
  ~ParameterShard();

  // Sets the initial weights from the model's flat buffer (all tensors in layout order). Needs a
  // layout from the config; FAILED_PRECONDITION when weights are already set.
  absl::Status InitializeFromFlat(std::span<const float> flat);

  absl::StatusOr<proto::RegisterResponse> Register(const proto::RegisterRequest& request);
  absl::StatusOr<proto::InitResponse> Init(const proto::InitRequest& request);
  // A rejected push changes nothing but the rejection counters.
  absl::StatusOr<proto::PushResponse> Push(const proto::PushRequest& request);
  // The credential check every request passes first: UNAUTHENTICATED for a wrong or missing
  // token, PERMISSION_DENIED for another job's id.
  absl::Status CheckCredentials(const std::string& job_id, const std::string& token) const;
  // Push for a caller that has checked the sender's credentials itself with CheckCredentials (a
  // push stream checks them once, on its first message); `request.job_id()` and
  // `request.token()` are not looked at. Otherwise exactly Push.
  absl::StatusOr<proto::PushResponse> PushAuthenticated(const proto::PushRequest& request);
  // PushAuthenticated for a push read without copying its payloads (server/push_decoder.h).
  absl::StatusOr<proto::PushResponse> PushAuthenticated(const ReceivedPush& push);

  // Pushes in parts (PushRequest.part/parts, on a push stream). CheckPushPart runs the lock-free
  // checks of one part as it arrives: its chunks are exactly the part's (sizes, encodings); it
  // clears `*finite` when a value is NaN or Inf. A refused part refuses the push. Once every part
  // has come, PushParts merges them (moving their chunks, not copying payloads) and applies the
  // push as PushAuthenticated would, with `finite` (every part's values finite) instead of
  // reading the payloads again; NaN or Inf refuses the whole push, counted like a unary push's.
  // The parts come as the push stream reads them (server/push_decoder.h), all read the same way.
  absl::Status CheckPushPart(const ReceivedPush& part, bool* finite) const;
  absl::StatusOr<proto::PushResponse> PushParts(std::vector<ReceivedPush> parts, bool finite);
  // `done` runs exactly once: before Pull returns when the answer is immediate (ticket 0),
  // otherwise later on the thread of the call that released or cancelled the pull.
  Ticket Pull(const proto::PullRequest& request, PullDone done);
  // Answers a parked pull with CANCELLED; a no-op when it was already answered.
  void CancelPull(Ticket ticket);
  absl::StatusOr<proto::StatsResponse> Stats(const proto::StatsRequest& request);
  absl::Status Leave(const proto::LeaveRequest& request);

  // Drops learners silent for longer than the learner timeout (a learner waiting in a parked pull
  // is not silent); returns how many were dropped. Call periodically.
  int ExpireSilentLearners();
  // Answers all parked pulls with UNAVAILABLE and refuses new pulls.
  void Shutdown();

  // The shard's full state for a checkpoint file (server/checkpoint.h). FAILED_PRECONDITION
  // before the shard has weights (nothing worth keeping yet).
  absl::StatusOr<proto::ShardCheckpoint> Checkpoint() const;
  // Continues from a checkpoint; call before serving. Refused, changing nothing, when it is of
  // another job, shard, shard count, protocol or model (INVALID_ARGUMENT naming the mismatch) or
  // when this shard already has weights (FAILED_PRECONDITION).
  absl::Status Restore(const proto::ShardCheckpoint& checkpoint);

  int parked_pulls() const;
  ShardState DebugState() const;
  const ShardConfig& config() const { return config_; }

 private:
  struct Parked {
    int learner = 0;
    int64_t clock = 0;
    proto::Encoding encoding = proto::FP32;
    uint32_t part = 0, parts = 1;
    PullDone done;
  };
  struct Completion {
    PullDone done;
    absl::StatusOr<PullAnswer> result;
  };

  ParameterShard(ShardConfig config, ProtocolSpec spec, std::unique_ptr<LearningRateRule> rule,
                 Clock* clock);

  absl::Status SetLayoutLocked(const proto::ModelLayout& layout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PushPreconditionsLocked(const proto::PushRequest& request) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The step decay's multiplier of the learning rate at the samples applied so far.
  float LrDecayLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // PushAuthenticated; `finite` set: whether the payload's values are all finite, already known.
  // `received`: the payloads of a push read by DecodePushRequest (empty: the request's own).
  absl::StatusOr<proto::PushResponse> PushChecked(const proto::PushRequest& request,
                                                  std::span<const PayloadView> received,
                                                  std::optional<bool> finite);
  // The whole pull, or one part of it (PullRequest.part/parts); counts a pull at part 0.
  absl::StatusOr<PullAnswer> BuildPullLocked(int learner, proto::Encoding encoding, uint32_t part,
                                                      uint32_t parts)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool PullReadyLocked(int learner, int64_t clock) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies a due update and collects every parked pull that became ready.
  void SettleLocked(std::vector<Completion>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void RunCompletions(std::vector<Completion> completions);
  // An empty store of this shard's part of `plan`.
  std::unique_ptr<ShardStore> NewStore(const ShardPlan* plan) const;

  const ShardConfig config_;
  const std::unique_ptr<LearningRateRule> rule_;
  Clock* const clock_;
  // Whether this process can keep two cores busy (its affinity mask and its cgroup's CPU quota,
  // UsableCpuCount), read once when the shard is made: the roles bind themselves (--cpus) before
  // they make one, and a store made per layout or checkpoint would read /proc and the cgroup
  // files again each time.
  const bool two_cores_;

  mutable absl::Mutex mu_;
  // The plan and store are created once (with the layout) and never replaced; the store's
  // contents are guarded by mu_.
  std::unique_ptr<ShardPlan> plan_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ShardStore> store_ ABSL_GUARDED_BY(mu_);
  SyncProtocol protocol_ ABSL_GUARDED_BY(mu_);
  std::map<Ticket, Parked> parked_ ABSL_GUARDED_BY(mu_);
  Ticket next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<uint64_t> pending_staleness_ ABSL_GUARDED_BY(mu_);
  uint64_t pending_samples_ ABSL_GUARDED_BY(mu_) = 0;
  StalenessStats staleness_ ABSL_GUARDED_BY(mu_);
  // When each learner's last pull was answered (its part 0), until its next gradient arrives:
  // the gradient's age is the time between. Not checkpointed.
  std::map<int, absl::Time> pull_served_ ABSL_GUARDED_BY(mu_);
  GradientAgeStats gradient_age_ ABSL_GUARDED_BY(mu_);
  uint64_t gradients_applied_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t gradients_rejected_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t gradients_nonfinite_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t samples_applied_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pushes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pulls_ ABSL_GUARDED_BY(mu_) = 0;
  double loss_recent_ ABSL_GUARDED_BY(mu_) = 0;
  bool have_loss_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace orrery::server
