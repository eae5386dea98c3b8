// Short commands run to completion on the event loop (`sbatch`, `squeue`, `scancel`, `kubectl`):
// start one, collect its output, get a callback with the result. Cluster backends use it to talk
// to their cluster's tools without blocking the loop.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "scheduler/backend.h"
#include "scheduler/backends/local_backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/liveness.h"

namespace orrery::scheduler {

struct CommandResult {
  // OK when the command ran to its end (whatever its exit code); UNAVAILABLE when it could not
  // start, DEADLINE_EXCEEDED when it was killed at its timeout.
  absl::Status run;
  ExitStatus exit;
  std::vector<std::string> out;  // stdout lines
  std::vector<std::string> err;  // stderr lines
  bool ok() const { return run.ok() && exit.ok(); }
  // "sbatch: exit code 1: sbatch: error: ..." — for error messages.
  std::string Describe(const std::string& what) const;
};

// Each command runs as a child on its own LocalBackend (freed once it has finished), so a
// backend that polls its cluster every few seconds does not accumulate state.
//
// Threads: the loop's thread only; `done` runs there, never inside Run. Destroying the runner
// kills the commands still running and drops their callbacks.
class CommandRunner {
 public:
  // `loop` is borrowed and must outlive the runner. `options` apply to every command.
  explicit CommandRunner(EventLoop& loop, LocalBackend::Options options = {});
  ~CommandRunner();
  CommandRunner(const CommandRunner&) = delete;
  CommandRunner& operator=(const CommandRunner&) = delete;

  // `env` is added to this process's environment; `stdin_text` is not supported (commands read
  // /dev/null), so pass files. At most `max_lines` lines per stream are kept.
  void Run(std::vector<std::string> argv, std::map<std::string, std::string> env, absl::Duration timeout,
           std::function<void(CommandResult)> done, size_t max_lines = 10000);

  size_t running() const { return commands_.size(); }

 private:
  struct Command;
  void Finish(int64_t id, absl::Status run, ExitStatus exit);

  EventLoop& loop_;
  LocalBackend::Options options_;
  std::map<int64_t, std::unique_ptr<Command>> commands_;
  std::vector<std::unique_ptr<LocalBackend>> finished_;  // freed from the loop after their exit
  int64_t next_ = 1;
  Liveness liveness_;
};

}  // namespace orrery::scheduler
