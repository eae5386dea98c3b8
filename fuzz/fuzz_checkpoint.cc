// A shard checkpoint as a restarted shard reads it: the file's bytes through ParseCheckpointFile
// (server/checkpoint.h; what ReadCheckpointFile does once it has read them), its state through
// ParameterShard::Restore. Any bytes must be refused
// without a crash, and a refused checkpoint must change nothing; an accepted one must give a
// shard that checkpoints back to the same state and goes on serving (registers, pulls, pushes,
// expiry, stats) without a crash.
//
// The first byte picks the shard (protocol, momentum, fixed16 master weights, whether the layout
// comes from the job or from the checkpoint) and how the rest is read:
//   0: as the whole file (header, length, CRC and payload all from the fuzzer);
//   1: as the payload of a file with a correct header, so the fuzzer reaches the state;
//   2: as protobuf bytes merged into a valid checkpoint of that shard, so most of the state is
//      consistent and one field at a time is not.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "parameter_server.pb.h"
#include "server/checkpoint.h"
#include "server/clock.h"
#include "server/parameter_shard.h"
#include "server/sharding.h"
#include "server/tensor_codec.h"
#include "tests/server/layout_util.h"
#include "tests/server/uniform_push.h"

namespace {

using orrery::proto::ShardCheckpoint;
using orrery::server::ManualClock;
using orrery::server::ParameterShard;
using orrery::server::ShardConfig;
using orrery::server::ShardPlan;

constexpr int kLearners = 3;

orrery::proto::ModelLayout Layout() {
  return orrery::server::testing::MakeLayout({{"w", 300}, {"b", 7}, {"v", 64}}, 16, 2);
}

// Bits 0-1: protocol; bit 2: momentum; bit 3: fixed16 master weights; bit 4: the layout is
// left to the checkpoint (a shard restarted before any learner registered).
ShardConfig Config(int variant) {
  static const char* const kProtocols[] = {"hardsync", "softsync:2", "async", "ssp:1"};
  ShardConfig c;
  c.shard_index = 0;
  c.num_shards = 2;
  c.job_id = "fz";
  if ((variant & 16) == 0) c.layout = Layout();
  c.protocol = kProtocols[variant & 3];
  c.num_learners = kLearners;
  c.lr = 0.1f;
  c.momentum = (variant & 4) != 0 ? 0.9f : 0.0f;
  if ((variant & 8) != 0) {
    c.fixed_weights = orrery::server::FixedWeights{orrery::quant::FixedFormat::WithFractionalBits(12)};
  }
  c.learner_timeout = absl::Seconds(10);
  return c;
}

std::unique_ptr<ParameterShard> NewShard(int variant, ManualClock* clock) {
  auto shard = ParameterShard::Create(Config(variant), clock);
  if (!shard.ok()) abort();
  return std::move(*shard);
}

orrery::proto::PushRequest Push(const ShardPlan& plan, int learner, int64_t step, float g,
                                uint64_t base) {
  return orrery::server::testing::UniformPush(plan, 0, "fz", "", learner, step, g, base);
}

void Register(ParameterShard& shard, int learner) {
  orrery::proto::RegisterRequest r;
  r.set_job_id("fz");
  r.set_learner_id(learner);
  *r.mutable_layout() = Layout();
  (void)shard.Register(r);
}

// Pulls at `clock`; a parked pull is cancelled at once.
void Pull(ParameterShard& shard, int learner, int64_t clock, uint32_t part = 0, uint32_t parts = 1) {
  orrery::proto::PullRequest r;
  r.set_job_id("fz");
  r.set_learner_id(learner);
  r.set_clock(clock);
  r.set_part(part);
  r.set_parts(parts);
  const ParameterShard::Ticket ticket = shard.Pull(
      r, [](absl::StatusOr<orrery::server::PullAnswer> answer) {
        if (answer.ok()) (void)answer->Materialize();
      });
  if (ticket != 0) shard.CancelPull(ticket);
}

// A checkpoint of a shard that trained a little: every learner joined, two gradients of step 0
// pushed (pending under hardsync, applied under the others), so the valid state is not trivial.
const ShardCheckpoint& ValidCheckpoint(int variant) {
  static std::optional<ShardCheckpoint> made[32];
  if (!made[variant]) {
    ManualClock clock;
    std::unique_ptr<ParameterShard> shard = NewShard(variant, &clock);
    for (int l = 0; l < kLearners; ++l) Register(*shard, l);
    const ShardPlan plan = *ShardPlan::Create(Layout());
    std::vector<float> flat(plan.total_elements(), 0.25f);
    if (!shard->InitializeFromFlat(flat).ok()) abort();
    (void)shard->Push(Push(plan, 0, 0, 0.5f, 0));
    (void)shard->Push(Push(plan, 1, 0, -0.25f, 0));
    absl::StatusOr<ShardCheckpoint> c = shard->Checkpoint();
    if (!c.ok()) abort();
    made[variant] = std::move(*c);
  }
  return *made[variant];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Protobuf logs each string that is not UTF-8; the verdict is what is checked here.
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  if (size < 1) return 0;
  const int variant = data[0] & 31;
  const int mode = (data[0] >> 5) % 3;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);

  absl::StatusOr<ShardCheckpoint> checkpoint = absl::UnknownError("unset");
  if (mode == 2) {
    ShardCheckpoint c = ValidCheckpoint(variant);
    if (!c.MergeFromString(rest)) return 0;
    checkpoint = std::move(c);
  } else {
    // The file's bytes as ReadCheckpointFile reads them, its header made by the writer's own
    // CheckpointHeader in mode 1.
    checkpoint = orrery::server::ParseCheckpointFile(
        mode == 0 ? rest : orrery::server::CheckpointHeader(rest) + rest, "fuzz-input.ckpt");
    // Every refusal of a file that exists is DATA_LOSS (what a person acts on: the file is bad).
    if (!checkpoint.ok() && !absl::IsDataLoss(checkpoint.status())) abort();
    if (!checkpoint.ok()) return 0;
  }

  ManualClock clock;
  std::unique_ptr<ParameterShard> shard = NewShard(variant, &clock);
  // The clock does not move here, so the learners' last_seen compare equal too.
  const orrery::server::ShardState before = shard->DebugState();
  const absl::Status restored = shard->Restore(*checkpoint);
  if (!restored.ok()) {
    if (restored.message().empty()) abort();
    if (!(shard->DebugState() == before)) abort();  // a refused checkpoint changes nothing
    return 0;
  }

  // Accepted: the shard's own checkpoint of that state restores to the same state.
  absl::StatusOr<ShardCheckpoint> again = shard->Checkpoint();
  if (!again.ok()) abort();
  std::unique_ptr<ParameterShard> copy = NewShard(variant, &clock);
  if (!copy->Restore(*again).ok()) abort();
  if (!(copy->DebugState() == shard->DebugState())) abort();

  // And it serves: the job's learners, a fresh one and an observer come and go.
  const ShardPlan plan = *ShardPlan::Create(Layout());
  for (int l = -1; l <= kLearners; ++l) Register(*shard, l);
  for (int l = 0; l < kLearners; ++l) {
    const int64_t step = shard->DebugState().hardsync_step;
    Pull(*shard, l, step);
    Pull(*shard, l, step, 1, 2);
    (void)shard->Push(Push(plan, l, step, 0.125f, shard->DebugState().version));
    Pull(*shard, l, step + 1);
  }
  Pull(*shard, -2, 0);
  clock.Advance(absl::Seconds(11));
  (void)shard->ExpireSilentLearners();
  orrery::proto::StatsRequest stats;
  stats.set_job_id("fz");
  (void)shard->Stats(stats);
  shard->Shutdown();
  return 0;
}
