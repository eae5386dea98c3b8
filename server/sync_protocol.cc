#include "server/sync_protocol.h"

#include <algorithm>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace orrery::server {

absl::StatusOr<ProtocolSpec> ParseProtocol(absl::string_view text, int num_learners) {
  if (num_learners < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the job needs at least one learner, got ", num_learners));
  }
  ProtocolSpec spec;
  spec.text = std::string(text);
  absl::string_view rest = text;
  if (text == "hardsync") {
    spec.kind = ProtocolKind::kHardSync;
  } else if (text == "async") {
    spec.kind = ProtocolKind::kSoftSync;
    spec.softsync_n = num_learners;
  } else if (absl::ConsumePrefix(&rest, "softsync:")) {
    int n = 0;
    if (!absl::SimpleAtoi(rest, &n) || n < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "protocol '", text, "': n of softsync:n must be a positive integer"));
    }
    spec.kind = ProtocolKind::kSoftSync;
    spec.softsync_n = n;
  } else if (absl::ConsumePrefix(&rest, "ssp:")) {
    int64_t s = 0;
    if (!absl::SimpleAtoi(rest, &s) || s < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "protocol '", text, "': s of ssp:s must be a non-negative integer"));
    }
    spec.kind = ProtocolKind::kSsp;
    spec.staleness_bound = s;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown protocol '", text, "'; use hardsync, softsync:N, async or ssp:S"));
  }
  return spec;
}

SyncProtocol::SyncProtocol(ProtocolSpec spec, int num_learners)
    : spec_(std::move(spec)), num_learners_(std::max(1, num_learners)) {
  switch (spec_.kind) {
    case ProtocolKind::kHardSync:
      per_update_ = 0;
      break;
    case ProtocolKind::kSoftSync:
      per_update_ = std::max(1, num_learners_ / std::max(1, spec_.softsync_n));
      break;
    case ProtocolKind::kSsp:
      per_update_ = 1;
      break;
  }
}

absl::StatusOr<SyncProtocol::Joined> SyncProtocol::Join(int requested_id, absl::Time now) {
  int id = requested_id;
  if (id == -1) {
    if (next_id_ >= kMaxLearnerId) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "no learner ids left to assign (ids 0..", kMaxLearnerId - 1,
          " are taken or were given out); register with an explicit id"));
    }
    id = next_id_;
  } else if (id < 0 || id >= kMaxLearnerId) {
    return absl::InvalidArgumentError(absl::StrCat(
        "learner id ", requested_id, " is out of range; use 0..", kMaxLearnerId - 1,
        ", -1 to be assigned one, or -2 to observe"));
  }
  auto [it, inserted] = learners_.try_emplace(id);
  Learner& l = it->second;
  if (!l.active) {
    int64_t start = 0;
    switch (spec_.kind) {
      case ProtocolKind::kHardSync:
        start = step_;
        break;
      case ProtocolKind::kSsp:
        start = active_learners() > 0 ? MinClock() : 0;
        break;
      case ProtocolKind::kSoftSync:
        start = 0;
        break;
    }
    l.clock = std::max(l.clock, start);
    l.active = true;
  }
  l.last_seen = now;
  if (inserted) {
    ++ever_joined_;
    if (!any_joined_) {
      any_joined_ = true;
      first_join_ = now;
    }
    if (ever_joined_ >= num_learners_) started_ = true;
  }
  next_id_ = std::max(next_id_, id + 1);
  return Joined{id, l.clock};
}

absl::Status SyncProtocol::Leave(int learner) {
  auto it = learners_.find(learner);
  if (it == learners_.end() || !it->second.active) {
    return absl::NotFoundError(absl::StrCat("learner ", learner, " is not registered"));
  }
  it->second.active = false;
  return absl::OkStatus();
}

std::vector<int> SyncProtocol::ExpireSilent(absl::Time now, absl::Duration timeout) {
  std::vector<int> dropped;
  for (auto& [id, l] : learners_) {
    if (l.active && now - l.last_seen > timeout) {
      l.active = false;
      dropped.push_back(id);
    }
  }
  if (!started_ && any_joined_ && now - first_join_ > timeout) started_ = true;
  return dropped;
}

void SyncProtocol::Touch(int learner, absl::Time now) {
  auto it = learners_.find(learner);
  if (it != learners_.end()) it->second.last_seen = std::max(it->second.last_seen, now);
}

bool SyncProtocol::IsActive(int learner) const {
  auto it = learners_.find(learner);
  return it != learners_.end() && it->second.active;
}

int SyncProtocol::active_learners() const {
  int n = 0;
  for (const auto& [id, l] : learners_) n += l.active ? 1 : 0;
  return n;
}

int64_t SyncProtocol::clock(int learner) const {
  auto it = learners_.find(learner);
  return it == learners_.end() ? 0 : it->second.clock;
}

int64_t SyncProtocol::MinClock() const {
  if (!started_) return 0;
  int64_t m = std::numeric_limits<int64_t>::max();
  for (const auto& [id, l] : learners_) {
    if (l.active) m = std::min(m, l.clock);
  }
  return m == std::numeric_limits<int64_t>::max() ? 0 : m;
}

absl::Status SyncProtocol::CheckPush(int learner, int64_t step) const {
  auto it = learners_.find(learner);
  if (it == learners_.end() || !it->second.active) {
    return absl::NotFoundError(absl::StrCat(
        "learner ", learner, " is not registered with this shard (never registered, left, or ",
        "dropped after a silence longer than the learner timeout); register again"));
  }
  if (step < 0 || step >= kMaxClock) {
    return absl::InvalidArgumentError(
        absl::StrCat("push step ", step, " is out of range; use 0..", kMaxClock - 1));
  }
  const Learner& l = it->second;
  if (step <= l.last_pushed) {
    return absl::AlreadyExistsError(absl::StrCat("learner ", learner, " already pushed step ",
                                                 l.last_pushed, "; step ", step,
                                                 " is a duplicate or out of order"));
  }
  if (spec_.kind == ProtocolKind::kHardSync) {
    if (step != step_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "hardsync is collecting step ", step_, " but learner ", learner, " pushed step ", step,
          "; pull at clock ", step_, " and push that step"));
    }
    if (l.clock > step) {
      return absl::FailedPreconditionError(absl::StrCat(
          "learner ", learner, " already announced clock ", l.clock, "; it cannot push step ",
          step, " any more"));
    }
  }
  return absl::OkStatus();
}

void SyncProtocol::RecordPush(int learner, int64_t step) {
  Learner& l = learners_[learner];
  l.last_pushed = step;
  l.clock = std::max(l.clock, step + 1);
  ++pending_;
}

absl::Status SyncProtocol::CheckPull(int learner, int64_t clock) const {
  if (!IsActive(learner)) {
    return absl::NotFoundError(absl::StrCat(
        "learner ", learner, " is not registered with this shard (never registered, left, or ",
        "dropped after a silence longer than the learner timeout); register again"));
  }
  if (clock < 0 || clock > kMaxClock) {
    return absl::InvalidArgumentError(
        absl::StrCat("pull clock ", clock, " is out of range; use 0..", kMaxClock));
  }
  return absl::OkStatus();
}

void SyncProtocol::RecordPull(int learner, int64_t clock) {
  Learner& l = learners_[learner];
  l.clock = std::max(l.clock, clock);
}

bool SyncProtocol::PullReady(int64_t clock) const {
  switch (spec_.kind) {
    case ProtocolKind::kHardSync:
      return step_ >= clock;
    case ProtocolKind::kSsp:
      return clock - MinClock() <= spec_.staleness_bound;
    case ProtocolKind::kSoftSync:
      return true;
  }
  return true;
}

void SyncProtocol::AdvanceIdle() {
  if (spec_.kind != ProtocolKind::kHardSync || pending_ > 0 || !started_) return;
  if (active_learners() == 0) return;
  int64_t m = std::numeric_limits<int64_t>::max();
  for (const auto& [id, l] : learners_) {
    if (l.active) m = std::min(m, l.clock);
  }
  if (m > step_) step_ = m;
}

bool SyncProtocol::UpdateDue() const {
  if (pending_ == 0) return false;
  if (spec_.kind != ProtocolKind::kHardSync) return pending_ >= per_update_;
  if (!started_) return false;
  for (const auto& [id, l] : learners_) {
    if (l.active && l.clock <= step_) return false;
  }
  return true;
}

void SyncProtocol::OnUpdateApplied() {
  pending_ = 0;
  if (spec_.kind == ProtocolKind::kHardSync) ++step_;
}

SyncProtocol::Snapshot SyncProtocol::Save() const {
  return Snapshot{learners_, next_id_, ever_joined_, started_, step_, pending_};
}

absl::Status SyncProtocol::Load(const Snapshot& s, absl::Time now) {
  if (s.pending < 0 || s.step < 0 || s.next_id < 0 || s.ever_joined < 0) {
    return absl::InvalidArgumentError("negative protocol counters");
  }
  if (s.step >= kMaxClock) {
    return absl::InvalidArgumentError(absl::StrCat("hardsync step ", s.step, " is out of range"));
  }
  // What Join, RecordPush and OnUpdateApplied keep true; a snapshot that breaks it was not
  // written by a shard (e.g. a hand-edited checkpoint) and would, once loaded, hand out an id
  // twice or average gradients nobody pushed.
  int pushed_current_step = 0;
  for (const auto& [id, learner] : s.learners) {
    if (id < 0 || id >= kMaxLearnerId || learner.clock < 0 || learner.clock > kMaxClock ||
        learner.last_pushed < -1 ||
        learner.last_pushed >= learner.clock) {
      return absl::InvalidArgumentError(absl::StrCat(
          "impossible learner ", id, " (clock ", learner.clock, ", last pushed step ",
          learner.last_pushed, ")"));
    }
    if (spec_.kind == ProtocolKind::kHardSync && learner.last_pushed > s.step) {
      return absl::InvalidArgumentError(absl::StrCat(
          "learner ", id, " pushed step ", learner.last_pushed, " but hardsync is collecting step ",
          s.step));
    }
    if (learner.last_pushed == s.step) ++pushed_current_step;
  }
  const int max_id = s.learners.empty() ? -1 : s.learners.rbegin()->first;
  if (s.next_id <= max_id || s.next_id > kMaxLearnerId) {
    return absl::InvalidArgumentError(absl::StrCat("the next learner id ", s.next_id,
                                                   " is not above every learner's (", max_id, ")"));
  }
  if (s.ever_joined < static_cast<int>(s.learners.size())) {
    return absl::InvalidArgumentError(absl::StrCat(s.learners.size(), " learners listed but only ",
                                                   s.ever_joined, " ever joined"));
  }
  if (spec_.kind == ProtocolKind::kHardSync && s.pending > pushed_current_step) {
    return absl::InvalidArgumentError(absl::StrCat(
        s.pending, " gradients pending for hardsync step ", s.step, " but only ",
        pushed_current_step, " learners pushed it"));
  }
  learners_ = s.learners;
  for (auto& [id, learner] : learners_) learner.last_seen = now;
  next_id_ = s.next_id;
  ever_joined_ = s.ever_joined;
  started_ = s.started;
  any_joined_ = !learners_.empty();
  first_join_ = now;
  step_ = s.step;
  pending_ = s.pending;
  return absl::OkStatus();
}

}  // namespace orrery::server
