// Processes that a scheduler daemon did not start itself: the survivors of an earlier daemon that
// was killed or crashed. A restarted daemon finds them by pid and start time, watches them through
// a pidfd and can signal them; it cannot read their exit codes (they are not its children) or their
// output (which they relay into their log files themselves, cli/log_relay.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "scheduler/event_loop.h"
#include "scheduler/liveness.h"

namespace orrery::scheduler {

// Field 22 of /proc/<pid>/stat (clock ticks after boot when the process started): with the pid it
// names one process for the life of the machine. nullopt when there is no such live process
// (zombies count as gone).
std::optional<uint64_t> ProcessStartTicks(int pid);

// /proc/sys/kernel/random/boot_id; "" if unreadable. Pids and start times mean nothing across boots.
std::string BootId();

// Records, beside its log file `log_path`, that process `pid` returned `code` from main:
// LOG_PATH.exit, {"pid":P,"code":C}, whole or not at all (a failure leaves the exit unknown).
// Written by `orrery` processes the daemon started (cli/log_relay.h).
void RecordExitCode(const std::string& log_path, int pid, int code);
// The exit code that process `pid` recorded so; nullopt when there is none for that pid (killed by
// a signal, still running, or an older record).
std::optional<int> RecordedExitCode(const std::string& log_path, int pid);

// Threads: construct, call and destroy on the loop's thread; `loop` must outlive it.
class AdoptedProcess {
 public:
  // Opens a pidfd (Linux >= 5.3) on `pid` and checks it is still the process that started at
  // `start_ticks`; NOT_FOUND when it has gone (or its pid now names another process).
  static absl::StatusOr<std::unique_ptr<AdoptedProcess>> Adopt(EventLoop& loop, int pid, uint64_t start_ticks);
  ~AdoptedProcess();
  AdoptedProcess(const AdoptedProcess&) = delete;
  AdoptedProcess& operator=(const AdoptedProcess&) = delete;

  int pid() const { return pid_; }
  bool exited() const { return exited_; }

  // `on_exit` runs once on the loop thread when the process has ended (never inside this call;
  // at once, posted, if it already has).
  void OnExit(std::function<void()> on_exit);

  // Sends `signal` to the process's group (the local backend makes every process lead its own
  // group, so this reaches what it started too). FAILED_PRECONDITION once it has exited.
  absl::Status SignalGroup(int signal);

 private:
  AdoptedProcess(EventLoop& loop, int pid, int pidfd);
  void Arm();

  EventLoop& loop_;
  int pid_;
  struct Watch;
  std::unique_ptr<Watch> watch_;
  bool exited_ = false;
  std::function<void()> on_exit_;
  Liveness liveness_;
};

}  // namespace orrery::scheduler
