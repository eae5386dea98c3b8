// A child process for the transport benchmark: started with posix_spawn, its stdin and stdout
// piped to us line by line, its stderr sent to a log file, stopped with SIGTERM (then SIGKILL).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace orrery::bench {

// Not thread-safe; one owner talks to the child. The destructor stops the child if it runs.
class Subprocess {
 public:
  // Starts argv[0] (a path) with `argv`. The child's stderr goes to `stderr_path` (appended), or
  // to /dev/null when empty.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                           const std::string& stderr_path);
  ~Subprocess();

  // The next line of the child's stdout without its newline. DEADLINE_EXCEEDED after `timeout`,
  // OUT_OF_RANGE at end of file (the child closed stdout or exited).
  absl::StatusOr<std::string> ReadLine(std::chrono::milliseconds timeout);
  // Reads lines until one starts with `prefix` and returns it (earlier lines are dropped).
  absl::StatusOr<std::string> ReadLineStartingWith(const std::string& prefix,
                                                   std::chrono::milliseconds timeout);
  // Everything the child writes to stdout until it closes it.
  absl::StatusOr<std::string> ReadAll(std::chrono::milliseconds timeout);
  absl::Status WriteLine(const std::string& line);

  // Sends SIGTERM, waits up to `grace` for the exit, then SIGKILLs. Returns the wait status
  // (-1 when already reaped). Idempotent.
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // Waits for the child to exit on its own; returns its wait status or DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(std::chrono::milliseconds timeout);

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

 private:
  Subprocess() = default;
  absl::Status Fill(std::chrono::steady_clock::time_point deadline);

  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  bool eof_ = false;
  std::string buffer_;
  std::string name_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
absl::StatusOr<int> FreeLoopbackPort();

// The path of the running executable.
std::string SelfExecutable();

// The CPU time (user + system, all threads) process `pid` has used so far, in seconds; 0 is this
// process. -1 when /proc/PID/stat cannot be read (the process is gone).
double ProcessCpuSeconds(pid_t pid = 0);

}  // namespace orrery::bench
