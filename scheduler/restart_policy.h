// When a supervised process that failed is started again: the restart policy shared by job specs
// and every backend, and the pure decision function the backends apply.
#pragma once

#include <optional>

#include "absl/time/time.h"

namespace orrery::scheduler {

// A process is restarted only after a failure (non-zero exit code or death by a signal) that was
// not caused by a stop request, at most `max_restarts` times over its life. The k-th restart
// (k = 0, 1, ...) waits min(backoff · 2^k, max_backoff) first.
struct RestartPolicy {
  int max_restarts = 0;  // 0 = never restart
  absl::Duration backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Seconds(30);
};

// The delay before the next start, or nullopt when the process must not be restarted.
// `restarts_done` counts the restarts already made; `failed` is false for a clean exit (code 0);
// `stop_requested` is true when the exit followed a stop request. Pure; any thread.
std::optional<absl::Duration> NextRestartDelay(const RestartPolicy& policy, int restarts_done,
                                               bool failed, bool stop_requested);

}  // namespace orrery::scheduler
