// Readiness waits on top of a Backend's output lines: "wait until server-0 prints
// `ORRERY_SERVER_READY <addr>`, or fail with its last lines if it dies or the deadline passes".
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scheduler/backend.h"
#include "scheduler/event_loop.h"

namespace orrery::scheduler {

struct LineMatch {
  ProcessId id = 0;
  std::string role;
  std::string line;                 // the whole line
  std::vector<std::string> groups;  // groups[0] is the matched text, then the capture groups
};

using WaitId = int64_t;

// Threads: like the Backend, everything on the loop thread. `loop` and `backend` are borrowed and
// must outlive the waiter; destroying it drops pending waits without calling them.
class LineWaiter {
 public:
  using Done = std::function<void(absl::StatusOr<LineMatch>)>;

  LineWaiter(EventLoop& loop, Backend& backend);
  ~LineWaiter();
  LineWaiter(const LineWaiter&) = delete;
  LineWaiter& operator=(const LineWaiter&) = delete;

  // Waits for the first line of `id` (stdout or stderr) delivered after this call that contains
  // a match of `pattern` (ECMAScript regex, searched anywhere in the line). `done` runs exactly
  // once, later, on the loop thread: with the match; with DEADLINE_EXCEEDED after `timeout`; or
  // with UNAVAILABLE if the process exits and will not be restarted (an exit followed by a
  // restart keeps waiting). Errors name the role and pattern and quote the process's last lines.
  // Returns INVALID_ARGUMENT for a bad pattern, NOT_FOUND for an unknown id and
  // FAILED_PRECONDITION if the process has already exited for good; `done` is then not called.
  absl::StatusOr<WaitId> Expect(ProcessId id, const std::string& pattern, absl::Duration timeout, Done done);

  // Drops a pending wait without calling its `done`. Unknown or finished ids are ignored.
  void Cancel(WaitId wait);

 private:
  struct Wait;
  void Complete(WaitId wait, absl::StatusOr<LineMatch> result);
  // `head` plus the process's last lines and log path.
  std::string Failure(const Wait& wait, const std::string& head) const;

  EventLoop& loop_;
  Backend& backend_;
  ListenerId line_listener_ = 0;
  ListenerId exit_listener_ = 0;
  std::map<WaitId, std::unique_ptr<Wait>> waits_;
  WaitId next_wait_ = 1;
};

// Blocking convenience for launchers: runs `loop` until each process in `ids` has printed a line
// matching `pattern`, and returns the matches in the order of `ids`; or returns the first failure
// as LineWaiter reports it. Must be called on the loop thread and not from inside a callback
// (it runs the loop itself). Lines printed before the call are not seen: call it right after
// starting the processes, before anything else runs the loop.
absl::StatusOr<std::vector<LineMatch>> WaitForLines(EventLoop& loop, Backend& backend,
                                                    const std::vector<ProcessId>& ids,
                                                    const std::string& pattern, absl::Duration timeout);

}  // namespace orrery::scheduler
