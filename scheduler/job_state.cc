#include "scheduler/job_state.h"

#include "absl/strings/str_cat.h"

namespace orrery::scheduler {

namespace {
constexpr JobState kAll[] = {JobState::kQueued,    JobState::kRunning,   JobState::kSucceeded,
                             JobState::kFailed,    JobState::kCancelled, JobState::kLost};
}  // namespace

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kSucceeded: return "succeeded";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
    case JobState::kLost: return "lost";
  }
  return "?";
}

std::optional<JobState> ParseJobState(absl::string_view name) {
  for (JobState s : kAll) {
    if (name == JobStateName(s)) return s;
  }
  return std::nullopt;
}

bool IsTerminal(JobState state) { return state != JobState::kQueued && state != JobState::kRunning; }

absl::Status CheckTransition(JobState from, JobState to) {
  bool ok = false;
  switch (from) {
    case JobState::kQueued:
      ok = to == JobState::kRunning || to == JobState::kCancelled || to == JobState::kFailed;
      break;
    case JobState::kRunning:
      ok = to == JobState::kSucceeded || to == JobState::kFailed || to == JobState::kCancelled ||
           to == JobState::kLost;
      break;
    default:
      break;  // terminal
  }
  if (ok) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("a ", JobStateName(from), " job cannot become ", JobStateName(to)));
}

}  // namespace orrery::scheduler
