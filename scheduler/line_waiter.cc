#include "scheduler/line_waiter.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace orrery::scheduler {
namespace {
constexpr size_t kTailLines = 20;
}  // namespace

struct LineWaiter::Wait {
  ProcessId id = 0;
  std::string role;
  std::string pattern;
  std::regex regex;
  absl::Duration timeout;
  Done done;
  TimerId timer = 0;
};

LineWaiter::LineWaiter(EventLoop& loop, Backend& backend) : loop_(loop), backend_(backend) {
  line_listener_ = backend_.AddLineListener([this](const OutputLine& line) {
    std::vector<std::pair<WaitId, LineMatch>> matched;
    for (const auto& [wait_id, wait] : waits_) {
      if (wait->id != line.id) continue;
      std::smatch m;
      if (!std::regex_search(line.text, m, wait->regex)) continue;
      LineMatch match{line.id, line.role, line.text, {}};
      for (const auto& group : m) match.groups.push_back(group.str());
      matched.emplace_back(wait_id, std::move(match));
    }
    for (auto& [wait_id, match] : matched) Complete(wait_id, std::move(match));
  });
  exit_listener_ = backend_.AddExitListener([this](const ProcessExit& exit) {
    if (!exit.final()) return;
    std::vector<std::pair<WaitId, std::string>> failed;
    for (const auto& [wait_id, wait] : waits_) {
      if (wait->id != exit.id) continue;
      std::string how = exit.stop_requested ? absl::StrCat("was stopped (", exit.status.ToString(), ")")
                                            : absl::StrCat("exited (", exit.status.ToString(), ")");
      if (!exit.error.empty()) how = absl::StrCat("could not be restarted (", exit.error, ")");
      failed.emplace_back(wait_id, Failure(*wait, absl::StrCat(how, " before printing a line matching '",
                                                               wait->pattern, "'")));
    }
    for (auto& [wait_id, message] : failed) Complete(wait_id, absl::UnavailableError(message));
  });
}

LineWaiter::~LineWaiter() {
  backend_.RemoveListener(line_listener_);
  backend_.RemoveListener(exit_listener_);
  for (auto& [id, wait] : waits_) loop_.Cancel(wait->timer);
}

std::string LineWaiter::Failure(const Wait& wait, const std::string& what) const {
  std::string message = absl::StrCat(wait.role, " ", what);
  std::vector<std::string> tail = backend_.Tail(wait.id, kTailLines);
  absl::StatusOr<ProcessInfo> info = backend_.Info(wait.id);
  std::string log = info.ok() && !info->log_path.empty() ? absl::StrCat(" (log: ", info->log_path, ")") : "";
  if (tail.empty()) return absl::StrCat(message, "; it printed nothing", log);
  return absl::StrCat(message, "; its last lines", log, ":\n  ", absl::StrJoin(tail, "\n  "));
}

absl::StatusOr<WaitId> LineWaiter::Expect(ProcessId id, const std::string& pattern, absl::Duration timeout,
                                          Done done) {
  absl::StatusOr<ProcessInfo> info = backend_.Info(id);
  if (!info.ok()) return info.status();
  auto wait = std::make_unique<Wait>();
  wait->id = id;
  wait->role = info->role;
  wait->pattern = pattern;
  wait->timeout = timeout;
  wait->done = std::move(done);
  try {
    wait->regex = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("bad line pattern '", pattern, "': ", e.what()));
  }
  if (info->state == ProcessState::kExited) {
    return absl::FailedPreconditionError(Failure(
        *wait, absl::StrCat("already exited (", info->last_exit ? info->last_exit->ToString() : "unknown status",
                            "); cannot wait for a line matching '", pattern, "'")));
  }
  WaitId wait_id = next_wait_++;
  wait->timer = loop_.RunAfter(timeout, [this, wait_id] {
    auto it = waits_.find(wait_id);
    if (it == waits_.end()) return;
    it->second->timer = 0;
    Complete(wait_id, absl::DeadlineExceededError(
                          Failure(*it->second, absl::StrCat("printed no line matching '", it->second->pattern,
                                                            "' within ", absl::FormatDuration(it->second->timeout)))));
  });
  waits_.emplace(wait_id, std::move(wait));
  return wait_id;
}

void LineWaiter::Cancel(WaitId wait) {
  auto it = waits_.find(wait);
  if (it == waits_.end()) return;
  loop_.Cancel(it->second->timer);
  waits_.erase(it);
}

void LineWaiter::Complete(WaitId wait_id, absl::StatusOr<LineMatch> result) {
  auto it = waits_.find(wait_id);
  if (it == waits_.end()) return;
  std::unique_ptr<Wait> wait = std::move(it->second);
  waits_.erase(it);
  if (wait->timer) loop_.Cancel(wait->timer);
  wait->done(std::move(result));
}

absl::StatusOr<std::vector<LineMatch>> WaitForLines(EventLoop& loop, Backend& backend,
                                                    const std::vector<ProcessId>& ids,
                                                    const std::string& pattern, absl::Duration timeout) {
  LineWaiter waiter(loop, backend);
  std::vector<std::optional<LineMatch>> matches(ids.size());
  size_t remaining = ids.size();
  absl::Status failure;
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StatusOr<WaitId> wait =
        waiter.Expect(ids[i], pattern, timeout, [&, i](absl::StatusOr<LineMatch> result) {
          if (!result.ok()) {
            if (failure.ok()) failure = result.status();
            return;
          }
          matches[i] = std::move(*result);
          --remaining;
        });
    if (!wait.ok()) return wait.status();
  }
  // The waits' own timers enforce `timeout`; this bound only guards against a stalled loop.
  bool finished = loop.RunUntil([&] { return remaining == 0 || !failure.ok(); }, timeout + absl::Seconds(5));
  if (!failure.ok()) return failure;
  if (!finished) return absl::DeadlineExceededError(absl::StrCat("waiting for '", pattern, "' timed out"));
  std::vector<LineMatch> out;
  for (auto& m : matches) out.push_back(std::move(*m));
  return out;
}

}  // namespace orrery::scheduler
