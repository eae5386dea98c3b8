// A parameter-server shard driven by any sequence of learners' requests (the order a network and
// misbehaving or restarted learners can produce): registers (the job's ids, one beyond them, an
// assigned one, an observer, another model), inits (NaN too), whole and partial pulls at any
// clock, pushes (unary and in parts) of any step and base version with finite or NaN gradients,
// leaves, silence past the learner timeout, cancelled pulls, stats, and checkpoint-restore cycles.
// The first byte picks the shard: bit 0 its index of 2, bits 1-2 the protocol, bit 3 the inverse
// rule, bit 4 momentum, bit 5 fixed16 master weights; bit 6 runs both shards of the job on the
// same requests, each for its own chunks, and their protocols must agree after each one.
// Checked after every request, under ASan/UBSan:
//   - a refused push or init changes nothing (ShardState);
//   - the version and the gradients applied never go down, the weights stay finite, and once
//     set they change only in an update;
//   - a push whose base version is ahead of the shard is refused; a learner stops being active
//     only when it leaves or when it was silent for longer than the timeout;
//   - every pull is answered exactly once (before Shutdown returns at the latest), an answered
//     pull's chunks never carry a version above the shard's;
//   - an update applies exactly the gradients pending (at most one update per request): under
//     softsync exactly c = max(1, floor(λ/n)) of them, under hardsync those of the collected step,
//     at most one per learner, and a learner's accepted steps only go up;
//   - the update's arithmetic: with m the mean of the pending gradients, each scaled by α₀ or,
//     under the inverse rule, by α₀ / max(1, τ), every weight moves by exactly −m (momentum μ:
//     the velocity becomes μ·v + m and the weight moves by minus that); with fixed16 master
//     weights the result lies on the format's grid, in its range, within one ε of the exact
//     value saturated to the range;
//   - a checkpoint restores to the same state.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/stubs/logging.h"
#include "parameter_server.pb.h"
#include "quant/fixed_format.h"
#include "server/clock.h"
#include "server/parameter_shard.h"
#include "server/push_decoder.h"
#include "server/sharding.h"
#include "server/tensor_codec.h"
#include "tests/server/layout_util.h"
#include "tests/server/pieces_util.h"
#include "tests/server/uniform_push.h"

namespace {

using orrery::server::ManualClock;
using orrery::server::ParameterShard;
using orrery::server::ShardConfig;
using orrery::server::ShardPlan;
using orrery::server::ShardState;

constexpr int kLearners = 3;

// An invariant broken: says which (the line) and stops, for libFuzzer to keep the input.
[[noreturn]] void Fail(int line) {
  fprintf(stderr, "fuzz_shard_ops.cc:%d: invariant broken\n", line);
  abort();
}

class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return at_ >= size_; }
  uint8_t Next() { return at_ < size_ ? data_[at_++] : 0; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

orrery::proto::ModelLayout Layout() {
  return orrery::server::testing::MakeLayout({{"w", 40}, {"b", 5}, {"v", 19}}, 8, 2);
}

// The protocols, each with its gradients per update as the papers define it (written out here,
// not asked of SyncProtocol): c = max(1, floor(λ/n)) for softsync:n, 1 for async and ssp, 0 for
// hardsync (every active learner's).
struct Protocol {
  const char* name;
  int per_update;
};
constexpr Protocol kProtocols[] = {{"hardsync", 0}, {"softsync:1", 3}, {"async", 1}, {"ssp:1", 1}};
static_assert(kLearners == 3, "softsync:1 groups λ gradients");

ShardConfig Config(uint8_t variant) {
  ShardConfig c;
  c.shard_index = variant & 1;
  c.num_shards = 2;
  c.job_id = "fz";
  c.layout = Layout();
  c.protocol = kProtocols[(variant >> 1) & 3].name;
  c.num_learners = kLearners;
  c.lr = 0.1f;
  c.staleness_rule = (variant & 8) != 0 ? "inverse" : "none";
  c.momentum = (variant & 16) != 0 ? 0.5f : 0.0f;
  if ((variant & 32) != 0) {
    c.fixed_weights = orrery::server::FixedWeights{orrery::quant::FixedFormat::WithFractionalBits(10)};
  }
  c.learner_timeout = absl::Seconds(10);
  return c;
}

// The state a checkpoint keeps: a restore counts every learner as heard from now (last_seen),
// which is the one thing it does not carry over.
ShardState Kept(ShardState s) {
  for (auto& [id, learner] : s.learners) learner.last_seen = absl::Time();
  return s;
}

void PrintDifference(const ShardState& a, const ShardState& b) {
  fprintf(stderr, "has_layout %d/%d initialized %d/%d version %lu/%lu weights %d accumulator %d velocity %d "
          "learners %d step %ld/%ld pending %d/%d staleness %d samples %lu/%lu applied %lu/%lu pushes %lu/%lu\n",
          a.has_layout, b.has_layout, a.initialized, b.initialized, a.version, b.version,
          a.weights == b.weights, a.accumulator == b.accumulator, a.velocity == b.velocity,
          a.learners == b.learners, a.hardsync_step, b.hardsync_step, a.pending, b.pending,
          a.staleness == b.staleness, a.pending_samples, b.pending_samples, a.gradients_applied,
          b.gradients_applied, a.pushes, b.pushes);
}

// A shard's protocol after one request (bit 6): its state but the weights, and how many
// pulls were answered so far.
struct TraceEntry {
  ShardState state;
  uint64_t answered_pulls = 0;
  bool operator==(const TraceEntry&) const = default;
};

struct PullRecord {
  int answers = 0;
};

class Driver {
 public:
  explicit Driver(uint8_t variant)
      : config_(Config(variant)), plan_(*ShardPlan::Create(Layout())) {
    auto shard = ParameterShard::Create(config_, &clock_);
    if (!shard.ok()) Fail(__LINE__);
    shard_ = std::move(*shard);
    per_update_ = kProtocols[(variant >> 1) & 3].per_update;
    last_ = shard_->DebugState();
  }

  void Run(Bytes& in) {
    for (int op = 0; op < 200 && !in.empty(); ++op) {
      Step(in);
      const ShardState s = shard_->DebugState();
      if (s.version < last_.version || s.gradients_applied < last_.gradients_applied) Fail(__LINE__);
      for (float w : s.weights) {
        if (!std::isfinite(w)) Fail(__LINE__);
      }
      CheckUpdate(s);
      CheckDrops(s);
      last_ = s;
      if (trace_ != nullptr) trace_->push_back(Protocol(s));
    }
    shard_->Shutdown();
    for (const auto& record : pulls_) {
      if (record->answers != 1) Fail(__LINE__);  // every pull answered exactly once
    }
  }

  // With a trace, Run appends what the shard's protocol state is after each request: its state
  // but the weights, and how many pulls were answered.
  void Trace(std::vector<TraceEntry>* trace) { trace_ = trace; }

 private:
  // One request. The shard's state before it is `last_` (nothing runs between requests).
  void Step(Bytes& in) {
    accepted_push_ = false;
    const uint8_t op = in.Next() % 9;
    const int learner = static_cast<int>(in.Next() % (kLearners + 2)) - 1;  // -1 .. λ
    op_ = op;
    op_learner_ = learner;
    switch (op) {
      case 0: {
        orrery::proto::RegisterRequest r;
        r.set_job_id("fz");
        r.set_learner_id(learner == kLearners ? -2 : learner);
        *r.mutable_layout() = Layout();
        if (in.Next() == 0xff) r.mutable_layout()->set_chunk_size(9);  // another model
        (void)shard_->Register(r);
        break;
      }
      case 1: {
        orrery::proto::InitRequest r;
        r.set_job_id("fz");
        const float value = static_cast<float>(in.Next()) / 64.0f;
        bool nan = in.Next() == 0xfe;  // into the first chunk; one byte whatever the chunks (bit 6)
        for (int i : plan_.ChunksOfShard(config_.shard_index)) {
          const orrery::server::Chunk& c = plan_.chunks()[i];
          auto* ic = r.add_chunks();
          ic->mutable_id()->set_tensor(plan_.TensorName(c.tensor));
          ic->mutable_id()->set_index(c.index);
          std::vector<float> v(c.length, value);
          if (std::exchange(nan, false)) v[0] = NAN;
          if (!orrery::server::EncodeFloats(v, orrery::proto::FP32, ic->mutable_weights()).ok()) Fail(__LINE__);
        }
        absl::StatusOr<orrery::proto::InitResponse> response = shard_->Init(r);
        if ((!response.ok() || !response->accepted()) && !(shard_->DebugState() == last_)) Fail(__LINE__);
        break;
      }
      case 2: {
        orrery::proto::PullRequest r;
        r.set_job_id("fz");
        r.set_learner_id(learner == kLearners ? -2 : learner);
        r.set_clock(Clock(learner, in.Next()));
        r.set_encoding(in.Next() % 4 == 0 ? orrery::proto::FIXED16 : orrery::proto::FP32);
        const uint8_t parts = in.Next() % 4;
        r.set_parts(parts);
        r.set_part(parts == 0 ? 0 : in.Next() % (parts + 1));
        auto record = std::make_shared<PullRecord>();
        pulls_.push_back(record);
        const ParameterShard::Ticket ticket =
            shard_->Pull(r, [this, record, learner = r.learner_id(),
                             clock = r.clock()](absl::StatusOr<orrery::server::PullAnswer> answer) {
              ++record->answers;
              if (!answer.ok()) return;
              const ShardState now = shard_->DebugState();
              const orrery::proto::PullResponse response = answer->Materialize();
              for (const orrery::proto::PullChunk& c : response.chunks()) {
                if (c.version() > now.version) Fail(__LINE__);
              }
              if (learner != -2) CheckPullGate(now, clock);
            });
        if (ticket != 0) parked_.push_back(ticket);
        break;
      }
      case 3:
      case 4: {
        const int64_t step = Clock(learner, in.Next());
        const uint64_t version = last_.version;
        const uint64_t back = in.Next() % 4;
        const uint64_t base = back == 3 ? version + 1 : (version >= back ? version - back : 0);
        const uint8_t g = in.Next();
        const float value = g == 0xfd ? NAN : (static_cast<float>(g) - 128.0f) / 256.0f;
        orrery::proto::PushRequest r = Push(learner, step, value, base);
        absl::StatusOr<orrery::proto::PushResponse> response;
        if (op == 3) {
          response = shard_->Push(r);
        } else {
          response = PushInParts(r, 1 + in.Next() % 3);
        }
        if (!response.ok()) {
          if (!(shard_->DebugState() == last_)) Fail(__LINE__);  // a refused push changes nothing
        } else {
          if (base > version) Fail(__LINE__);  // a base from the future is refused
          // A learner's accepted steps only go up.
          const auto [previous, first] = last_accepted_step_.try_emplace(learner, step);
          if (!first && step <= std::exchange(previous->second, step)) Fail(__LINE__);
          accepted_push_ = true;
          // Its contribution to the update: α₀ (inverse: α₀ / max(1, τ)) times the gradient,
          // τ = the shard's version when it arrived minus its base.
          const uint64_t tau = version - base;
          const double rate = config_.staleness_rule == "inverse"
                                  ? config_.lr / static_cast<double>(std::max<uint64_t>(1, tau))
                                  : config_.lr;
          pending_terms_.push_back(rate * static_cast<double>(value));
        }
        break;
      }
      case 5: {
        orrery::proto::LeaveRequest r;
        r.set_job_id("fz");
        r.set_learner_id(learner);
        (void)shard_->Leave(r);
        break;
      }
      case 6:
        clock_.Advance(absl::Seconds(in.Next() % 16));
        (void)shard_->ExpireSilentLearners();
        break;
      case 7: {
        if (!parked_.empty()) {
          shard_->CancelPull(parked_[in.Next() % parked_.size()]);
        }
        orrery::proto::StatsRequest r;
        r.set_job_id("fz");
        (void)shard_->Stats(r);
        break;
      }
      case 8: {
        absl::StatusOr<orrery::proto::ShardCheckpoint> c = shard_->Checkpoint();
        if (!c.ok()) break;  // no weights yet
        auto copy = ParameterShard::Create(config_, &clock_);
        if (!copy.ok()) Fail(__LINE__);
        const absl::Status restored = (*copy)->Restore(*c);
        if (!restored.ok()) {
          fprintf(stderr, "own checkpoint refused: %s\n", std::string(restored.message()).c_str());
          Fail(__LINE__);
        }
        if (!(Kept((*copy)->DebugState()) == Kept(shard_->DebugState()))) {
          PrintDifference((*copy)->DebugState(), shard_->DebugState());
          Fail(__LINE__);
        }
        // Carry on with the restored shard, as after a restart: parked pulls are answered by the
        // old one's shutdown.
        shard_->Shutdown();
        shard_ = std::move(*copy);
        parked_.clear();
        break;
      }
    }
  }

  // A clock near the learner's own (most requests are plausible), or anywhere.
  int64_t Clock(int learner, uint8_t b) const {
    auto it = last_.learners.find(learner);
    const int64_t own = it == last_.learners.end() ? 0 : it->second.clock;
    switch (b % 8) {
      case 0: return last_.hardsync_step;
      case 1: return own > 0 ? own - 1 : 0;
      case 2: return own + 1;
      case 3: return static_cast<int64_t>(b) - 200;
      case 4: return int64_t{1} << (b % 64);
      default: return own;
    }
  }

  orrery::proto::PushRequest Push(int learner, int64_t step, float g, uint64_t base) const {
    orrery::proto::PushRequest r = orrery::server::testing::UniformPush(
        plan_, config_.shard_index, "fz", "", learner, step, g, base);
    r.set_samples(4);
    return r;
  }

  // As a push stream delivers it: the chunks in `parts` consecutive messages, each checked on
  // arrival, applied once the last has come.
  absl::StatusOr<orrery::proto::PushResponse> PushInParts(const orrery::proto::PushRequest& whole,
                                                          uint32_t parts) {
    const uint32_t n = static_cast<uint32_t>(whole.chunks_size());
    if (parts > n) parts = n == 0 ? 1 : n;
    std::vector<std::string> bytes(parts);
    std::vector<orrery::server::ReceivedPush> received;
    bool finite = true;
    for (uint32_t p = 0; p < parts; ++p) {
      orrery::proto::PushRequest part = whole;
      part.clear_chunks();
      const orrery::server::PartRange range = orrery::server::PartOf(n, p, parts);
      for (size_t i = range.first; i < range.end; ++i) *part.add_chunks() = whole.chunks(static_cast<int>(i));
      part.set_part(p);
      part.set_parts(parts);
      bytes[p] = part.SerializeAsString();
      const absl::string_view piece(bytes[p]);
      absl::StatusOr<orrery::server::ReceivedPush> decoded =
          orrery::server::testing::DecodePieces(std::span<const absl::string_view>(&piece, 1));
      if (!decoded.ok()) Fail(__LINE__);
      const absl::Status checked = shard_->CheckPushPart(*decoded, &finite);
      if (!checked.ok()) return checked;
      received.push_back(std::move(*decoded));
    }
    return shard_->PushParts(std::move(received), finite);
  }

  // A learner's pull at `clock` answered in state `s`: hardsync only once step clock - 1 is
  // applied; ssp only while clock - min(active clocks) <= s (the job not started counts the
  // missing learners at 0, which only makes that stricter).
  void CheckPullGate(const ShardState& s, int64_t clock) const {
    if (config_.protocol == "hardsync" && s.hardsync_step < clock) Fail(__LINE__);
    if (config_.protocol == "ssp:1") {
      int64_t slowest = INT64_MAX;
      for (const auto& [id, l] : s.learners) {
        if (l.active) slowest = std::min(slowest, l.clock);
      }
      if (slowest != INT64_MAX && clock - slowest > 1) Fail(__LINE__);
    }
  }

  // What an update may apply, given the state before the request (`last_`) and after it.
  void CheckUpdate(const ShardState& s) {
    const uint64_t applied = s.gradients_applied - last_.gradients_applied;
    const int pending_before = last_.pending + (accepted_push_ ? 1 : 0);
    if (s.version == last_.version) {
      if (applied != 0) Fail(__LINE__);
      // Without an update the weights change only when they are first set.
      if (last_.initialized && (s.weights != last_.weights || s.velocity != last_.velocity)) Fail(__LINE__);
      return;
    }
    if (s.version != last_.version + 1 || s.pending != 0) Fail(__LINE__);
    if (applied != static_cast<uint64_t>(pending_before)) Fail(__LINE__);
    if (per_update_ > 0 && applied != static_cast<uint64_t>(per_update_)) Fail(__LINE__);
    if (config_.protocol == "hardsync") {
      if (applied > last_.learners.size() + (accepted_push_ ? 1 : 0)) Fail(__LINE__);
      if (s.hardsync_step < last_.hardsync_step + 1) Fail(__LINE__);  // AdvanceIdle may move it further
      // Due only once every active learner pushed the step or moved past it.
      for (const auto& [id, l] : s.learners) {
        if (l.active && l.clock <= last_.hardsync_step) Fail(__LINE__);
      }
    }
    if (pending_terms_.size() != applied) Fail(__LINE__);
    if (!last_.weights.empty()) CheckArithmetic(s, applied);
    pending_terms_.clear();
  }

  // A learner stops being active only when it leaves, or at an expiry once it was silent for
  // longer than the timeout.
  void CheckDrops(const ShardState& s) {
    for (const auto& [id, before] : last_.learners) {
      if (!before.active) continue;
      auto after = s.learners.find(id);
      if (after != s.learners.end() && after->second.active) continue;
      if (op_ == 5 && op_learner_ == id) continue;
      if (op_ == 6 && clock_.Now() - before.last_seen > config_.learner_timeout) continue;
      fprintf(stderr, "learner %d dropped by request %d\n", id, op_);
      Fail(__LINE__);
    }
  }

  TraceEntry Protocol(ShardState s) const {
    s.weights.clear();
    s.accumulator.clear();
    s.velocity.clear();
    return TraceEntry{std::move(s), AnsweredPulls()};
  }

  uint64_t AnsweredPulls() const {
    uint64_t n = 0;
    for (const auto& record : pulls_) n += record->answers;
    return n;
  }

  static bool Near(double got, double expected) {
    return std::abs(got - expected) <= 1e-5 * (1 + std::abs(expected));
  }

  // The update's arithmetic. The gradients are uniform, so each pending one is a single value
  // (its rate times its gradient, pending_terms_) and their mean m is the same for every weight.
  // In fp32, v' = μ·v + m and w' = w − v' (without momentum w' = w − m); with fixed16 master
  // weights, w' is that value rounded to the format's grid: on the grid, in its range, and within
  // one ε of the value saturated to the range (stochastic rounding picks the grid point below or
  // above).
  void CheckArithmetic(const ShardState& s, uint64_t applied) const {
    double sum = 0;
    for (double t : pending_terms_) sum += t;
    const double mean = sum / static_cast<double>(applied);
    const double mu = config_.momentum;
    for (size_t i = 0; i < s.weights.size(); ++i) {
      double step = mean;
      if (mu != 0) {
        step = mu * static_cast<double>(last_.velocity[i]) + mean;
        if (!Near(s.velocity[i], step)) Fail(__LINE__);
      }
      const double exact = static_cast<double>(last_.weights[i]) - step;
      const double w = s.weights[i];
      if (!config_.fixed_weights.has_value()) {
        if (!Near(w, exact)) {
          fprintf(stderr, "weight %zu: %.9g, expected %.9g\n", i, w, exact);
          Fail(__LINE__);
        }
        continue;
      }
      const orrery::quant::FixedFormat format = config_.fixed_weights->format;
      const double q = std::ldexp(w, format.fl);
      if (q != std::floor(q) || q < orrery::quant::kFixedMin || q > orrery::quant::kFixedMax) Fail(__LINE__);
      const double saturated = std::clamp(exact, format.min_value(), format.max_value());
      if (std::abs(w - saturated) > format.epsilon() * (1 + 1e-4)) {
        fprintf(stderr, "fixed16 weight %zu: %.9g, unrounded %.9g\n", i, w, exact);
        Fail(__LINE__);
      }
    }
  }

  ManualClock clock_;
  const ShardConfig config_;
  const ShardPlan plan_;
  std::unique_ptr<ParameterShard> shard_;
  std::vector<ParameterShard::Ticket> parked_;
  std::vector<std::shared_ptr<PullRecord>> pulls_;
  std::map<int, int64_t> last_accepted_step_;  // per learner
  ShardState last_;
  bool accepted_push_ = false;  // by the request being checked
  std::vector<TraceEntry>* trace_ = nullptr;
  uint8_t op_ = 0;              // the request being checked
  int op_learner_ = 0;          // and the learner it names
  // Rate times gradient value of each pending gradient, since the last update (kept across a
  // checkpoint-restore, as the shard keeps its accumulator).
  std::vector<double> pending_terms_;
  // Gradients per update: c of softsync (async: 1), 1 for ssp, 0 for hardsync (every learner).
  int per_update_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  if (size < 1) return 0;
  if ((data[0] & 64) == 0) {
    Bytes in(data + 1, size - 1);
    Driver driver(data[0]);
    driver.Run(in);
    return 0;
  }
  // Both shards of the job given the same requests, each for its own chunks: their protocols
  // must agree after every request (versions, learners, hardsync step, pending gradients,
  // staleness, answered pulls), whatever chunks each holds.
  std::vector<TraceEntry> traces[2];
  for (int index = 0; index < 2; ++index) {
    Bytes in(data + 1, size - 1);
    Driver driver(static_cast<uint8_t>((data[0] & ~1) | index));
    driver.Trace(&traces[index]);
    driver.Run(in);
  }
  for (size_t i = 0; i < traces[0].size(); ++i) {
    if (i >= traces[1].size() || !(traces[0][i] == traces[1][i])) {
      fprintf(stderr, "the shards disagree after request %zu:\n", i);
      if (i < traces[1].size()) {
        PrintDifference(traces[0][i].state, traces[1][i].state);
        fprintf(stderr, "answered pulls %lu/%lu\n", traces[0][i].answered_pulls, traces[1][i].answered_pulls);
      }
      Fail(__LINE__);
    }
  }
  if (traces[0].size() != traces[1].size()) Fail(__LINE__);
  return 0;
}
