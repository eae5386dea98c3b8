#include "scheduler/backend.h"

#include <string.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace orrery::scheduler {
namespace {

// Calls each listener registered when the event started that is still registered when its turn
// comes; the shared_ptr copies keep a listener alive if it removes itself while running.
template <typename Callback, typename Event>
void Dispatch(const std::map<ListenerId, std::shared_ptr<Callback>>& listeners, const Event& event) {
  std::vector<std::pair<ListenerId, std::shared_ptr<Callback>>> snapshot(listeners.begin(), listeners.end());
  for (auto& [id, callback] : snapshot) {
    if (listeners.count(id) != 0) (*callback)(event);
  }
}

}  // namespace

std::string FormatLogRecord(absl::Time time, absl::string_view role, absl::string_view tag,
                            absl::string_view text) {
  return absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone()), " ", role, " ", tag,
                      "| ", text);
}

void LineSplitter::Append(absl::string_view data, size_t max_line_bytes,
                          absl::FunctionRef<void(std::string)> line) {
  partial_.append(data.data(), data.size());
  size_t start = 0;
  while (true) {
    size_t newline = partial_.find('\n', start);
    if (newline == std::string::npos) {
      if (partial_.size() - start < max_line_bytes) break;
      line(partial_.substr(start, max_line_bytes));
      start += max_line_bytes;
      continue;
    }
    line(partial_.substr(start, newline - start));
    start = newline + 1;
  }
  partial_.erase(0, start);
}

void LineSplitter::Finish(absl::FunctionRef<void(std::string)> line) {
  if (partial_.empty()) return;
  std::string rest;
  rest.swap(partial_);
  line(std::move(rest));
}

void AppendLogRecord(int fd, absl::Time time, absl::string_view role, absl::string_view tag,
                     absl::string_view text) {
  const std::string record = FormatLogRecord(time, role, tag, text) + "\n";
  const char* p = record.data();
  size_t left = record.size();
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    left -= static_cast<size_t>(w);
  }
}

std::string ExitStatus::ToString() const {
  if (signal != 0) {
    const char* abbrev = sigabbrev_np(signal);
    return abbrev != nullptr ? absl::StrCat("killed by signal ", signal, " (SIG", abbrev, ")")
                             : absl::StrCat("killed by signal ", signal);
  }
  return absl::StrCat("exit code ", exit_code);
}

absl::StatusOr<std::vector<ProcessId>> Backend::StartGroup(const std::vector<ProcessSpec>& specs) {
  std::vector<ProcessId> ids;
  for (const ProcessSpec& spec : specs) {
    absl::StatusOr<ProcessId> id = Start(spec);
    if (!id.ok()) {
      for (ProcessId started : ids) Stop(started, absl::ZeroDuration()).IgnoreError();
      return id.status();
    }
    ids.push_back(*id);
  }
  return ids;
}

ListenerId Backend::AddLineListener(LineCallback callback) {
  ListenerId id = next_listener_++;
  line_listeners_.emplace(id, std::make_shared<LineCallback>(std::move(callback)));
  return id;
}

ListenerId Backend::AddExitListener(ExitCallback callback) {
  ListenerId id = next_listener_++;
  exit_listeners_.emplace(id, std::make_shared<ExitCallback>(std::move(callback)));
  return id;
}

void Backend::RemoveListener(ListenerId id) {
  line_listeners_.erase(id);
  exit_listeners_.erase(id);
}

void Backend::EmitLine(const OutputLine& line) { Dispatch(line_listeners_, line); }

void Backend::EmitExit(const ProcessExit& exit) { Dispatch(exit_listeners_, exit); }

const char* ProcessStateName(ProcessState state) {
  switch (state) {
    case ProcessState::kRunning: return "running";
    case ProcessState::kRestarting: return "restarting";
    case ProcessState::kExited: return "exited";
  }
  return "?";
}

}  // namespace orrery::scheduler
