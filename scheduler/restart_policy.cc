#include "scheduler/restart_policy.h"

#include <algorithm>

namespace orrery::scheduler {

std::optional<absl::Duration> NextRestartDelay(const RestartPolicy& policy, int restarts_done,
                                               bool failed, bool stop_requested) {
  if (!failed || stop_requested || restarts_done >= policy.max_restarts) return std::nullopt;
  absl::Duration delay = policy.backoff;
  for (int k = 0; k < restarts_done && delay < policy.max_backoff; ++k) delay *= 2;
  return std::min(delay, policy.max_backoff);
}

}  // namespace orrery::scheduler
