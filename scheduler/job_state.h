// The life of a job in the scheduler daemon: its states and the transitions between them. Pure
// logic, no I/O; the daemon, the store and the tests share it.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace orrery::scheduler {

//   queued ──start──▶ running ──▶ succeeded | failed | cancelled | lost
//     └──cancel──▶ cancelled
// A queued job can also fail before it runs (its spec no longer parses when its turn comes).
// succeeded, failed, cancelled and lost are terminal.
enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled, kLost };

// "queued", "running", "succeeded", "failed", "cancelled", "lost".
const char* JobStateName(JobState state);
std::optional<JobState> ParseJobState(absl::string_view name);

bool IsTerminal(JobState state);

// OK when a job may move from `from` to `to`; FAILED_PRECONDITION naming both otherwise.
absl::Status CheckTransition(JobState from, JobState to);

}  // namespace orrery::scheduler
