// The time source the shard uses for learner liveness; injected so tests step time by hand.
#pragma once

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace orrery::server {

// Thread-safe. Implementations must be monotonic enough for timeouts (not wall-clock jumps).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
};

// The process clock.
class RealClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};

// A clock that only moves when a test advances it.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(absl::Time start = absl::UnixEpoch()) : now_(start) {}
  absl::Time Now() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace orrery::server
