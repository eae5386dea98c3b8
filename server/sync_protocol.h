// The consistency protocols of Rudra (hardsync, n-softsync, async) and SSP (bounded staleness) as
// plain decisions: who is a member, when pending gradients become an update, and whether a pull
// may be answered now. No weights, no network, no threads; ParameterShard drives it under its lock.
//
//  hardsync   The update for step H is due once every active learner has pushed step H (or has
//             moved past it); pulls for clock c are answered once H >= c (step c−1 applied).
//  softsync:n An update is due after every c = max(1, ⌊λ/n⌋) gradients; pulls never wait.
//  async      softsync:λ (c = 1).
//  ssp:s      Every gradient is applied on arrival; a pull at clock c is answered only while
//             c − min(active clocks) <= s.
//
// A learner's clock is the number of steps it has completed: a pull at clock c sets it to at least
// c, a push of step k to at least k + 1. Until λ learners have joined (or one learner timeout has
// passed since the first joined) the job has not "started": hardsync applies nothing and ssp
// counts the missing learners as being at clock 0.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace orrery::server {

enum class ProtocolKind { kHardSync, kSoftSync, kSsp };

struct ProtocolSpec {
  ProtocolKind kind = ProtocolKind::kSoftSync;
  int softsync_n = 1;          // n of softsync:n (λ for async)
  int64_t staleness_bound = 0; // s of ssp:s
  std::string text;            // as given: "hardsync", "softsync:4", "async", "ssp:2"
  bool operator==(const ProtocolSpec&) const = default;
};

// Parses "hardsync", "softsync:N", "async" or "ssp:S" for a job of `num_learners` (λ >= 1).
absl::StatusOr<ProtocolSpec> ParseProtocol(absl::string_view text, int num_learners);

// Not thread-safe; the owner serialises calls.
class SyncProtocol {
 public:
  static constexpr int kMaxLearnerId = 1 << 20;
  // Steps and clocks above this are refused (from a push, a pull or a checkpoint): no job runs
  // that many steps, and clock + 1 must not overflow.
  static constexpr int64_t kMaxClock = int64_t{1} << 62;

  SyncProtocol(ProtocolSpec spec, int num_learners);

  const ProtocolSpec& spec() const { return spec_; }
  int num_learners() const { return num_learners_; }
  // c for softsync/async, 1 for ssp, 0 for hardsync (which waits for every active learner).
  int GradientsPerUpdate() const { return per_update_; }

  struct Joined {
    int learner_id = 0;
    int64_t clock = 0;  // where the learner's clock starts (kept when it rejoins)
  };
  // Adds learner `requested_id`, or a fresh id when it is -1. Registering an active id again is
  // idempotent and returns its current clock.
  absl::StatusOr<Joined> Join(int requested_id, absl::Time now);
  // Removes an active learner from the accounting; its already-pushed gradients stay pending.
  absl::Status Leave(int learner);
  // Drops active learners last heard from more than `timeout` before `now`; returns their ids.
  // Also starts the job when `timeout` has passed since the first learner joined.
  std::vector<int> ExpireSilent(absl::Time now, absl::Duration timeout);
  // Records that `learner` is alive at `now` (no-op for unknown learners).
  void Touch(int learner, absl::Time now);

  bool IsActive(int learner) const;
  int active_learners() const;
  bool started() const { return started_; }
  int64_t hardsync_step() const { return step_; }
  int pending() const { return pending_; }
  int64_t clock(int learner) const;
  // Smallest clock among active learners (0 before the job starts or when there are none).
  int64_t MinClock() const;

  // Whether `learner` may push step `step` now. NOT_FOUND for an inactive learner, ALREADY_EXISTS
  // when it already pushed that step (a retried push), FAILED_PRECONDITION for a hardsync step
  // other than the one being collected. Changes nothing.
  absl::Status CheckPush(int learner, int64_t step) const;
  // Records an accepted push (CheckPush returned OK): one more pending gradient.
  void RecordPush(int learner, int64_t step);

  // NOT_FOUND for an inactive learner, INVALID_ARGUMENT for a negative clock. Changes nothing.
  absl::Status CheckPull(int learner, int64_t clock) const;
  // Raises the learner's clock to `clock` (a pull announces completed steps, even if it waits).
  void RecordPull(int learner, int64_t clock);
  // Whether a pull at `clock` by an active learner may be answered now.
  bool PullReady(int64_t clock) const;

  // Hardsync only: when no gradient of the collected step is pending and every active learner has
  // moved past it, move the step forward without an update. Call after membership changes.
  void AdvanceIdle();
  // Whether the pending gradients must be applied as one update now.
  bool UpdateDue() const;
  // Records that the pending gradients were applied: resets the count, advances hardsync's step.
  void OnUpdateApplied();

  struct Learner {
    bool active = false;
    int64_t clock = 0;
    int64_t last_pushed = -1;
    absl::Time last_seen;
    bool operator==(const Learner&) const = default;
  };
  const std::map<int, Learner>& learners() const { return learners_; }
  bool operator==(const SyncProtocol&) const = default;

  // Everything but the spec, for checkpoints.
  struct Snapshot {
    std::map<int, Learner> learners;
    int next_id = 0;
    int ever_joined = 0;
    bool started = false;
    int64_t step = 0;
    int pending = 0;
  };
  Snapshot Save() const;
  // Puts a snapshot back; every learner counts as heard from at `now` (the restarted shard gives
  // them one learner timeout to come back). INVALID_ARGUMENT for an impossible snapshot.
  absl::Status Load(const Snapshot& snapshot, absl::Time now);

 private:
  ProtocolSpec spec_;
  int num_learners_;
  int per_update_;
  std::map<int, Learner> learners_;
  int next_id_ = 0;
  int ever_joined_ = 0;
  bool started_ = false;
  bool any_joined_ = false;
  absl::Time first_join_;
  int64_t step_ = 0;   // hardsync: the step being collected
  int pending_ = 0;    // gradients received since the last update
};

}  // namespace orrery::server
