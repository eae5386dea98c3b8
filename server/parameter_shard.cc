#include "server/parameter_shard.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "base/cpu_quota.h"
#include "base/status_macros.h"
#include "server/tensor_codec.h"

namespace orrery::server {
namespace {

constexpr int kObserver = -2;

// Compares without an early exit so response time does not reveal how much of a token matched.
bool TokensEqual(const std::string& a, const std::string& b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i]) ^
                                                static_cast<unsigned char>(i < b.size() ? b[i] : 0);
  return diff == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ParameterShard>> ParameterShard::Create(ShardConfig config,
                                                                       Clock* clock) {
  if (config.num_shards == 0 || config.shard_index >= config.num_shards) {
    return absl::InvalidArgumentError(absl::StrCat("shard index ", config.shard_index,
                                                   " is not below the shard count ",
                                                   config.num_shards));
  }
  if (config.job_id.empty()) return absl::InvalidArgumentError("the shard needs a job id");
  if (!std::isfinite(config.momentum) || config.momentum < 0 || config.momentum >= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("momentum must be in [0, 1), got ", config.momentum));
  }
  if (!std::isfinite(config.lr_decay_factor) || config.lr_decay_factor <= 0 ||
      config.lr_decay_factor > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the learning-rate decay factor must be in (0, 1], got ",
                     config.lr_decay_factor));
  }
  for (size_t i = 0; i < config.lr_decay_at_samples.size(); ++i) {
    if (config.lr_decay_at_samples[i] == 0 ||
        (i > 0 && config.lr_decay_at_samples[i] <= config.lr_decay_at_samples[i - 1])) {
      return absl::InvalidArgumentError(
          "the learning-rate decay points (samples applied) must be positive and ascending");
    }
  }
  if (config.fixed_weights.has_value() &&
      (config.fixed_weights->format.fl < 0 ||
       config.fixed_weights->format.fl > quant::kMaxFractionalBits)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the fixed16 weights' FL must be in [0, ", quant::kMaxFractionalBits, "], got ",
        config.fixed_weights->format.fl));
  }
  if (config.learner_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the learner timeout must be positive");
  }
  ASSIGN_OR_RETURN(ProtocolSpec spec, ParseProtocol(config.protocol, config.num_learners));
  ASSIGN_OR_RETURN(std::unique_ptr<LearningRateRule> rule,
                   MakeLearningRateRule(config.staleness_rule, config.lr));
  std::optional<proto::ModelLayout> layout = config.layout;
  std::unique_ptr<ParameterShard> shard(
      new ParameterShard(std::move(config), std::move(spec), std::move(rule), clock));
  if (layout.has_value()) {
    absl::MutexLock lock(&shard->mu_);
    RETURN_IF_ERROR(shard->SetLayoutLocked(*layout));
  }
  return shard;
}

ParameterShard::ParameterShard(ShardConfig config, ProtocolSpec spec,
                               std::unique_ptr<LearningRateRule> rule, Clock* clock)
    : config_(std::move(config)),
      rule_(std::move(rule)),
      clock_(clock),
      two_cores_(UsableCpuCount() >= 2),
      protocol_(std::move(spec), config_.num_learners) {}

ParameterShard::~ParameterShard() { Shutdown(); }

std::unique_ptr<ShardStore> ParameterShard::NewStore(const ShardPlan* plan) const {
  return std::make_unique<ShardStore>(plan, config_.shard_index, config_.momentum, config_.fixed_weights,
                                      two_cores_);
}

absl::Status ParameterShard::CheckCredentials(const std::string& job_id,
                                              const std::string& token) const {
  if (!config_.token.empty() && !TokensEqual(config_.token, token)) {
    return absl::UnauthenticatedError(
        "wrong or missing job token; use the token this job was started with");
  }
  if (job_id != config_.job_id) {
    return absl::PermissionDeniedError(absl::StrCat("request is for job '", job_id,
                                                    "' but this shard serves job '",
                                                    config_.job_id, "'"));
  }
  return absl::OkStatus();
}

absl::Status ParameterShard::SetLayoutLocked(const proto::ModelLayout& layout) {
  if (layout.num_shards() != config_.num_shards) {
    return absl::InvalidArgumentError(absl::StrCat("layout is cut for ", layout.num_shards(),
                                                   " shards but this job runs ",
                                                   config_.num_shards));
  }
  ASSIGN_OR_RETURN(ShardPlan plan, ShardPlan::Create(layout));
  plan_ = std::make_unique<ShardPlan>(std::move(plan));
  store_ = NewStore(plan_.get());
  return absl::OkStatus();
}

absl::Status ParameterShard::InitializeFromFlat(std::span<const float> flat) {
  std::vector<Completion> done;
  {
    absl::MutexLock lock(&mu_);
    if (store_ == nullptr) {
      return absl::FailedPreconditionError("initial weights need the model layout first");
    }
    if (store_->initialized()) {
      return absl::FailedPreconditionError("the shard's weights are already initialised");
    }
    RETURN_IF_ERROR(store_->InitializeFromFlat(flat));
    SettleLocked(&done);
  }
  RunCompletions(std::move(done));
  return absl::OkStatus();
}

absl::StatusOr<proto::RegisterResponse> ParameterShard::Register(
    const proto::RegisterRequest& request) {
  RETURN_IF_ERROR(CheckCredentials(request.job_id(), request.token()));
  std::vector<Completion> done;
  proto::RegisterResponse response;
  {
    absl::MutexLock lock(&mu_);
    if (plan_ == nullptr) {
      if (request.layout().tensors_size() == 0) {
        return absl::FailedPreconditionError(
            "this shard has no model layout yet; the first Register must carry it");
      }
      RETURN_IF_ERROR(SetLayoutLocked(request.layout()));
      LOG(INFO) << "shard " << config_.shard_index << ": layout set by the first Register: "
                << plan_->total_elements() << " elements, " << store_->num_chunks()
                << " chunks here";
    } else {
      RETURN_IF_ERROR(CompareLayouts(plan_->layout(), request.layout()));
    }
    response.set_shard(config_.shard_index);
    response.set_parts(true);
    if (request.learner_id() == kObserver) {
      response.set_learner_id(kObserver);
    } else {
      ASSIGN_OR_RETURN(SyncProtocol::Joined joined,
                       protocol_.Join(request.learner_id(), clock_->Now()));
      response.set_learner_id(joined.learner_id);
      response.set_clock(joined.clock);
      SettleLocked(&done);
    }
    response.set_version(store_->version());
  }
  RunCompletions(std::move(done));
  return response;
}

absl::StatusOr<proto::InitResponse> ParameterShard::Init(const proto::InitRequest& request) {
  RETURN_IF_ERROR(CheckCredentials(request.job_id(), request.token()));
  std::vector<Completion> done;
  proto::InitResponse response;
  {
    absl::MutexLock lock(&mu_);
    if (store_ == nullptr) {
      return absl::FailedPreconditionError(
          "this shard has no model layout yet; Register before sending initial weights");
    }
    response.set_version(store_->version());
    if (store_->initialized()) {
      response.set_accepted(false);
      return response;
    }
    ASSIGN_OR_RETURN(std::vector<float> values, store_->DecodeChunks(request.chunks()));
    if (!AllFinite(values)) {
      return absl::InvalidArgumentError("initial weights contain NaN or Inf");
    }
    store_->Initialize(std::move(values));
    response.set_accepted(true);
    SettleLocked(&done);
  }
  RunCompletions(std::move(done));
  return response;
}

absl::Status ParameterShard::PushPreconditionsLocked(const proto::PushRequest& request) const {
  if (store_ == nullptr) {
    return absl::FailedPreconditionError("this shard has no model layout yet; Register first");
  }
  if (!store_->initialized()) {
    return absl::FailedPreconditionError(
        "this shard has no initial weights yet; a learner must send Init before pushing");
  }
  if (request.learner_id() == kObserver) {
    return absl::InvalidArgumentError("observers (learner id -2) may pull but not push");
  }
  return protocol_.CheckPush(request.learner_id(), request.step());
}

absl::StatusOr<proto::PushResponse> ParameterShard::Push(const proto::PushRequest& request) {
  RETURN_IF_ERROR(CheckCredentials(request.job_id(), request.token()));
  if (request.parts() > 1) {
    absl::MutexLock lock(&mu_);
    ++gradients_rejected_;
    return absl::InvalidArgumentError(
        "a push in parts (PushRequest.parts > 1) goes on a PushStream; the unary Push takes "
        "whole pushes");
  }
  return PushAuthenticated(request);
}

absl::StatusOr<proto::PushResponse> ParameterShard::PushAuthenticated(
    const proto::PushRequest& request) {
  return PushChecked(request, {}, std::nullopt);
}

absl::StatusOr<proto::PushResponse> ParameterShard::PushAuthenticated(const ReceivedPush& push) {
  return PushChecked(push.request, push.payloads, std::nullopt);
}

absl::Status ParameterShard::CheckPushPart(const ReceivedPush& part, bool* finite) const {
  const ShardStore* store = nullptr;
  {
    absl::MutexLock lock(&mu_);
    store = store_.get();  // never replaced once set
  }
  if (store == nullptr) return absl::OkStatus();  // PushParts refuses it: no layout yet
  const proto::PushRequest& r = part.request;
  RETURN_IF_ERROR(store->CheckChunkPart(r.chunks(), r.part(), r.parts(), part.payloads));
  for (int i = 0; i < r.chunks_size(); ++i) *finite &= PayloadAllFinite(part.Payload(i));
  return absl::OkStatus();
}

absl::StatusOr<proto::PushResponse> ParameterShard::PushParts(std::vector<ReceivedPush> parts,
                                                              bool finite) {
  if (parts.empty()) return absl::InvalidArgumentError("a push in parts needs its parts");
  // The merged push's payloads point into every part's buffers, which `parts` keeps alive (each
  // part's `keep`) until PushChecked has returned.
  proto::PushRequest merged = std::move(parts[0].request);
  merged.clear_part();
  merged.clear_parts();
  std::vector<PayloadView> payloads = std::move(parts[0].payloads);
  for (size_t p = 1; p < parts.size(); ++p) {
    ReceivedPush& part = parts[p];
    // In order, so that payloads[i] stays chunk i's; the chunks move, their payloads with them.
    auto* from = part.request.mutable_chunks();
    std::vector<proto::PushChunk*> moved;
    while (!from->empty()) moved.push_back(from->ReleaseLast());
    for (auto it = moved.rbegin(); it != moved.rend(); ++it) {
      merged.mutable_chunks()->AddAllocated(*it);
    }
    payloads.insert(payloads.end(), part.payloads.begin(), part.payloads.end());
  }
  if (!payloads.empty() && payloads.size() != static_cast<size_t>(merged.chunks_size())) {
    return absl::InternalError("the parts of a push were not all read the same way");
  }
  return PushChecked(merged, payloads, finite);
}

absl::StatusOr<proto::PushResponse> ParameterShard::PushChecked(
    const proto::PushRequest& request, std::span<const PayloadView> received,
    std::optional<bool> known_finite) {
  const ShardStore* store = nullptr;
  {
    absl::MutexLock lock(&mu_);
    absl::Status st = PushPreconditionsLocked(request);
    if (!st.ok()) {
      if (!absl::IsAlreadyExists(st)) ++gradients_rejected_;
      return st;
    }
    store = store_.get();  // never replaced once set
  }
  // Check the payload without the lock: it reads only the immutable chunk map. The gradient is
  // decoded later, under the lock, straight into the accumulator.
  absl::StatusOr<std::vector<PayloadView>> gradient =
      store->CheckChunks(request.chunks(), received);
  bool finite = gradient.ok();
  if (finite && known_finite.has_value()) {
    finite = *known_finite;
  } else if (finite) {
    for (const PayloadView& payload : *gradient) finite &= PayloadAllFinite(payload);
  }

  std::vector<Completion> done;
  proto::PushResponse response;
  {
    absl::MutexLock lock(&mu_);
    absl::Status st = PushPreconditionsLocked(request);  // the world may have moved meanwhile
    if (st.ok() && !gradient.ok()) st = gradient.status();
    uint64_t base = store_->version();
    if (st.ok() && request.chunks_size() > 0) {
      base = request.chunks(0).base_version();
      for (const proto::PushChunk& c : request.chunks()) {
        if (c.base_version() != base) {
          st = absl::InvalidArgumentError(absl::StrCat(
              "chunks of one push carry different base versions (", base, " and ",
              c.base_version(), "); push the gradient of one pull"));
          break;
        }
      }
      if (st.ok() && base > store_->version()) {
        // FAILED_PRECONDITION: after a restart from a checkpoint the learner's last pull can be
        // ahead of the shard; the learner drops this gradient and pulls again.
        st = absl::FailedPreconditionError(absl::StrCat(
            "base version ", base, " is from the future: this shard is at version ",
            store_->version(), " (restarted from a checkpoint?); pull again"));
      }
    }
    if (st.ok() && !finite) {
      ++gradients_nonfinite_;
      st = absl::InvalidArgumentError(absl::StrCat(
          "gradient of learner ", request.learner_id(), " step ", request.step(),
          " contains NaN or Inf; the whole push was rejected"));
      LOG(WARNING) << "shard " << config_.shard_index << ": " << st.message();
    }
    if (!st.ok()) {
      if (!absl::IsAlreadyExists(st)) ++gradients_rejected_;
      return st;
    }
    const uint64_t staleness = store_->version() - base;
    store_->Accumulate(*gradient, rule_->Rate(staleness) * LrDecayLocked());
    pending_staleness_.push_back(staleness);
    // The gradient's version is fixed from here to its update (no update falls in between), so
    // its age ends here too.
    if (auto served = pull_served_.find(request.learner_id()); served != pull_served_.end()) {
      gradient_age_.Record(absl::ToDoubleSeconds(clock_->Now() - served->second));
      pull_served_.erase(served);
    }
    pending_samples_ += request.samples();
    protocol_.RecordPush(request.learner_id(), request.step());
    protocol_.Touch(request.learner_id(), clock_->Now());
    ++pushes_;
    if (std::isfinite(request.loss())) {
      loss_recent_ = have_loss_ ? 0.9 * loss_recent_ + 0.1 * request.loss() : request.loss();
      have_loss_ = true;
    }
    SettleLocked(&done);
    store_->FlushDeferred();  // `request` holds the gradient's bytes only until we return
    response.set_version(store_->version());
  }
  RunCompletions(std::move(done));
  return response;
}

float ParameterShard::LrDecayLocked() const {
  float multiplier = 1.0f;
  for (uint64_t at : config_.lr_decay_at_samples) {
    if (samples_applied_ < at) break;
    multiplier *= config_.lr_decay_factor;
  }
  return multiplier;
}

bool ParameterShard::PullReadyLocked(int learner, int64_t clock) const {
  if (store_ == nullptr || !store_->initialized()) return false;
  if (learner == kObserver) return true;
  return protocol_.PullReady(clock);
}

absl::StatusOr<PullAnswer> ParameterShard::BuildPullLocked(int learner, proto::Encoding encoding,
                                                           uint32_t part, uint32_t parts) {
  absl::StatusOr<PullAnswer> answer = store_->AnswerPull(encoding, part, parts);
  if (answer.ok() && part == 0) {
    ++pulls_;
    if (learner != kObserver) pull_served_[learner] = clock_->Now();
  }
  return answer;
}

ParameterShard::Ticket ParameterShard::Pull(const proto::PullRequest& request, PullDone done) {
  std::vector<Completion> completions;
  Ticket ticket = 0;
  {
    absl::Status st = CheckCredentials(request.job_id(), request.token());
    absl::MutexLock lock(&mu_);
    if (st.ok() && shutting_down_) st = absl::UnavailableError("the shard is shutting down");
    if (st.ok() && store_ == nullptr) {
      st = absl::FailedPreconditionError("this shard has no model layout yet; Register first");
    }
    const proto::Encoding encoding = request.encoding();
    if (st.ok() && encoding != proto::ENCODING_UNSPECIFIED && encoding != proto::FP32 &&
        encoding != proto::FIXED16) {
      st = absl::InvalidArgumentError(absl::StrCat("pull asks for unknown encoding ",
                                                   static_cast<int>(encoding),
                                                   "; use FP32 or FIXED16"));
    }
    const uint32_t parts = std::max<uint32_t>(1, request.parts());
    if (st.ok()) st = store_->CheckPart("pull asks for", request.part(), parts);
    const int learner = request.learner_id();
    if (st.ok() && learner != kObserver) st = protocol_.CheckPull(learner, request.clock());
    if (!st.ok()) {
      completions.push_back({std::move(done), st});
    } else {
      if (learner != kObserver) {
        protocol_.Touch(learner, clock_->Now());
        protocol_.RecordPull(learner, request.clock());
        SettleLocked(&completions);  // a raised clock may release others or complete a step
      }
      if (PullReadyLocked(learner, request.clock())) {
        completions.push_back(
            {std::move(done), BuildPullLocked(learner, request.encoding(), request.part(), parts)});
      } else {
        ticket = next_ticket_++;
        parked_.emplace(ticket,
                        Parked{learner, request.clock(), request.encoding(), request.part(),
                               parts, std::move(done)});
      }
    }
  }
  RunCompletions(std::move(completions));
  return ticket;
}

void ParameterShard::CancelPull(Ticket ticket) {
  std::vector<Completion> completions;
  {
    absl::MutexLock lock(&mu_);
    auto it = parked_.find(ticket);
    if (it == parked_.end()) return;
    completions.push_back(
        {std::move(it->second.done), absl::CancelledError("the pull was cancelled")});
    parked_.erase(it);
  }
  RunCompletions(std::move(completions));
}

absl::StatusOr<proto::StatsResponse> ParameterShard::Stats(const proto::StatsRequest& request) {
  RETURN_IF_ERROR(CheckCredentials(request.job_id(), request.token()));
  absl::MutexLock lock(&mu_);
  proto::StatsResponse r;
  r.set_shard(config_.shard_index);
  r.set_version(store_ ? store_->version() : 0);
  r.set_initialized(store_ && store_->initialized());
  r.set_gradients_applied(gradients_applied_);
  r.set_gradients_rejected(gradients_rejected_);
  r.set_gradients_rejected_nonfinite(gradients_nonfinite_);
  for (uint64_t b : staleness_.histogram()) r.add_staleness_histogram(b);
  r.set_staleness_max(staleness_.max());
  r.set_staleness_sum(staleness_.sum());
  r.set_gradient_age_count(gradient_age_.count);
  r.set_gradient_age_sum(gradient_age_.sum);
  r.set_gradient_age_max(gradient_age_.max);
  r.set_pushes(pushes_);
  r.set_pulls(pulls_);
  r.set_train_loss_recent(loss_recent_);
  r.set_samples_applied(samples_applied_);
  r.set_active_learners(protocol_.active_learners());
  return r;
}

absl::Status ParameterShard::Leave(const proto::LeaveRequest& request) {
  RETURN_IF_ERROR(CheckCredentials(request.job_id(), request.token()));
  std::vector<Completion> completions;
  {
    absl::MutexLock lock(&mu_);
    if (request.learner_id() == kObserver) return absl::OkStatus();
    RETURN_IF_ERROR(protocol_.Leave(request.learner_id()));
    for (auto it = parked_.begin(); it != parked_.end();) {
      if (it->second.learner == request.learner_id()) {
        completions.push_back({std::move(it->second.done),
                               absl::CancelledError("the learner left the job")});
        it = parked_.erase(it);
      } else {
        ++it;
      }
    }
    SettleLocked(&completions);
  }
  RunCompletions(std::move(completions));
  return absl::OkStatus();
}

int ParameterShard::ExpireSilentLearners() {
  std::vector<Completion> completions;
  std::vector<int> dropped;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (const auto& [ticket, p] : parked_) protocol_.Touch(p.learner, now);
    const bool was_started = protocol_.started();
    dropped = protocol_.ExpireSilent(now, config_.learner_timeout);
    if (!dropped.empty() || was_started != protocol_.started()) SettleLocked(&completions);
  }
  for (int id : dropped) {
    LOG(WARNING) << "shard " << config_.shard_index << ": dropped learner " << id
                 << " after more than " << config_.learner_timeout << " of silence";
  }
  RunCompletions(std::move(completions));
  return static_cast<int>(dropped.size());
}

void ParameterShard::Shutdown() {
  std::vector<Completion> completions;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (auto& [ticket, p] : parked_) {
      completions.push_back(
          {std::move(p.done), absl::UnavailableError("the shard is shutting down")});
    }
    parked_.clear();
  }
  RunCompletions(std::move(completions));
}

void ParameterShard::SettleLocked(std::vector<Completion>* out) {
  if (store_ == nullptr) return;
  protocol_.AdvanceIdle();
  if (store_->initialized() && protocol_.UpdateDue()) {
    const int count = protocol_.pending();
    store_->ApplyAccumulated(count);
    for (uint64_t s : pending_staleness_) staleness_.Record(s);
    gradients_applied_ += static_cast<uint64_t>(count);
    samples_applied_ += pending_samples_;
    pending_staleness_.clear();
    pending_samples_ = 0;
    protocol_.OnUpdateApplied();
    protocol_.AdvanceIdle();
  }
  for (auto it = parked_.begin(); it != parked_.end();) {
    Parked& p = it->second;
    if (p.learner != kObserver && !protocol_.IsActive(p.learner)) {
      out->push_back({std::move(p.done),
                      absl::NotFoundError(absl::StrCat("learner ", p.learner,
                                                       " is no longer registered"))});
      it = parked_.erase(it);
    } else if (PullReadyLocked(p.learner, p.clock)) {
      out->push_back({std::move(p.done), BuildPullLocked(p.learner, p.encoding, p.part, p.parts)});
      it = parked_.erase(it);
    } else {
      ++it;
    }
  }
}

void ParameterShard::RunCompletions(std::vector<Completion> completions) {
  for (Completion& c : completions) std::move(c.done)(std::move(c.result));
}

namespace {

std::string FloatBytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

absl::StatusOr<std::vector<float>> BytesToFloats(const std::string& bytes, const char* what) {
  if (bytes.size() % sizeof(float) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("the checkpoint's ", what, " has ", bytes.size(),
                                                   " bytes, not a whole number of floats"));
  }
  std::vector<float> v(bytes.size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

}  // namespace

absl::StatusOr<proto::ShardCheckpoint> ParameterShard::Checkpoint() const {
  absl::MutexLock lock(&mu_);
  if (store_ == nullptr || !store_->initialized()) {
    return absl::FailedPreconditionError("the shard has no weights yet; nothing to checkpoint");
  }
  proto::ShardCheckpoint c;
  c.set_job_id(config_.job_id);
  c.set_shard_index(config_.shard_index);
  c.set_num_shards(config_.num_shards);
  *c.mutable_layout() = plan_->layout();
  c.set_protocol(config_.protocol);
  c.set_num_learners(config_.num_learners);
  c.set_written_unix_micros(absl::ToUnixMicros(absl::Now()));
  c.set_version(store_->version());
  c.set_weights(FloatBytes(store_->weights()));
  c.set_velocity(FloatBytes(store_->velocity()));
  // The accumulator is complete here: Push flushes a deferred gradient before it unlocks.
  if (protocol_.pending() > 0) c.set_accumulator(FloatBytes(store_->accumulator()));
  const SyncProtocol::Snapshot p = protocol_.Save();
  for (const auto& [id, l] : p.learners) {
    proto::CheckpointLearner* cl = c.add_learners();
    cl->set_id(id);
    cl->set_active(l.active);
    cl->set_clock(l.clock);
    cl->set_last_pushed(l.last_pushed);
  }
  c.set_next_learner_id(p.next_id);
  c.set_ever_joined(p.ever_joined);
  c.set_started(p.started);
  c.set_hardsync_step(p.step);
  c.set_pending(p.pending);
  for (uint64_t s : pending_staleness_) c.add_pending_staleness(s);
  c.set_pending_samples(pending_samples_);
  for (uint64_t h : staleness_.histogram()) c.add_staleness_histogram(h);
  c.set_staleness_count(staleness_.count());
  c.set_staleness_sum(staleness_.sum());
  c.set_staleness_max(staleness_.max());
  c.set_gradients_applied(gradients_applied_);
  c.set_gradients_rejected(gradients_rejected_);
  c.set_gradients_nonfinite(gradients_nonfinite_);
  c.set_samples_applied(samples_applied_);
  c.set_pushes(pushes_);
  c.set_pulls(pulls_);
  return c;
}

absl::Status ParameterShard::Restore(const proto::ShardCheckpoint& c) {
  auto mismatch = [](const std::string& what, const auto& theirs, const auto& ours) {
    return absl::InvalidArgumentError(absl::StrCat("the checkpoint is of ", what, " ", theirs,
                                                   ", this shard is of ", what, " ", ours));
  };
  if (c.job_id() != config_.job_id) return mismatch("job", c.job_id(), config_.job_id);
  if (c.shard_index() != config_.shard_index) return mismatch("shard", c.shard_index(), config_.shard_index);
  if (c.num_shards() != config_.num_shards) return mismatch("a job of shards", c.num_shards(), config_.num_shards);
  if (c.protocol() != config_.protocol) return mismatch("protocol", c.protocol(), config_.protocol);
  ASSIGN_OR_RETURN(std::vector<float> weights, BytesToFloats(c.weights(), "weights"));
  ASSIGN_OR_RETURN(std::vector<float> velocity, BytesToFloats(c.velocity(), "momentum"));
  ASSIGN_OR_RETURN(std::vector<float> accumulator, BytesToFloats(c.accumulator(), "pending gradient"));
  if (!AllFinite(weights) || !AllFinite(velocity) || !AllFinite(accumulator)) {
    return absl::InvalidArgumentError("the checkpoint holds NaN or Inf values");
  }
  if (c.pending_staleness_size() != c.pending() || (c.pending() > 0) != !accumulator.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the checkpoint's pending gradients do not add up (", c.pending(), " pending, ",
        c.pending_staleness_size(), " staleness values, ", accumulator.size(),
        " accumulated values)"));
  }
  SyncProtocol::Snapshot p;
  for (const proto::CheckpointLearner& l : c.learners()) {
    p.learners[l.id()] = SyncProtocol::Learner{l.active(), l.clock(), l.last_pushed(), absl::Time()};
  }
  p.next_id = c.next_learner_id();
  p.ever_joined = c.ever_joined();
  p.started = c.started();
  p.step = c.hardsync_step();
  p.pending = c.pending();
  StalenessStats staleness;
  if (!staleness.Restore({c.staleness_histogram().begin(), c.staleness_histogram().end()},
                         c.staleness_count(), c.staleness_sum(), c.staleness_max())) {
    return absl::InvalidArgumentError("the checkpoint's staleness statistics do not fit together (histogram size, count, max and sum)");
  }

  absl::MutexLock lock(&mu_);
  if (store_ != nullptr && store_->initialized()) {
    return absl::FailedPreconditionError("this shard already has weights; restore before serving");
  }
  if (store_ != nullptr &&
      plan_->layout().SerializeAsString() != c.layout().SerializeAsString()) {
    return absl::InvalidArgumentError(
        "the checkpoint is of another model (its tensors or chunk size differ from this job's layout)");
  }
  // Validate everything on copies, then commit: a refused checkpoint changes nothing.
  std::unique_ptr<ShardPlan> plan;
  if (store_ == nullptr) {
    if (c.layout().num_shards() != config_.num_shards) {
      return mismatch("a layout for shards", c.layout().num_shards(), config_.num_shards);
    }
    ASSIGN_OR_RETURN(ShardPlan created, ShardPlan::Create(c.layout()));
    plan = std::make_unique<ShardPlan>(std::move(created));
  }
  std::unique_ptr<ShardStore> store = NewStore(plan != nullptr ? plan.get() : plan_.get());
  if (config_.momentum == 0) velocity.clear();
  RETURN_IF_ERROR(store->Restore(c.version(), std::move(weights), std::move(velocity),
                                 std::move(accumulator)));
  SyncProtocol protocol = protocol_;
  RETURN_IF_ERROR(protocol.Load(p, clock_->Now()));

  if (plan) plan_ = std::move(plan);
  store_ = std::move(store);
  protocol_ = std::move(protocol);
  pending_staleness_.assign(c.pending_staleness().begin(), c.pending_staleness().end());
  pending_samples_ = c.pending_samples();
  staleness_ = std::move(staleness);
  gradients_applied_ = c.gradients_applied();
  gradients_rejected_ = c.gradients_rejected();
  gradients_nonfinite_ = c.gradients_nonfinite();
  samples_applied_ = c.samples_applied();
  pushes_ = c.pushes();
  pulls_ = c.pulls();
  return absl::OkStatus();
}

int ParameterShard::parked_pulls() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(parked_.size());
}

ShardState ParameterShard::DebugState() const {
  absl::MutexLock lock(&mu_);
  ShardState s;
  s.has_layout = store_ != nullptr;
  if (store_) {
    s.initialized = store_->initialized();
    s.version = store_->version();
    s.weights = store_->weights();
    s.accumulator = store_->accumulator();
    s.velocity = store_->velocity();
  }
  s.learners = protocol_.learners();
  s.hardsync_step = protocol_.hardsync_step();
  s.pending = protocol_.pending();
  s.pending_staleness = pending_staleness_;
  s.pending_samples = pending_samples_;
  s.staleness = staleness_;
  s.gradients_applied = gradients_applied_;
  s.samples_applied = samples_applied_;
  s.pushes = pushes_;
  return s;
}

}  // namespace orrery::server
