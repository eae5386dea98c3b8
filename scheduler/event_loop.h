// The scheduler's single-threaded event loop: a Boost.Asio io_context with timers, posted work,
// termination-signal handling and bounded waits. Backends, `orrery run` and the scheduler daemon
// share one EventLoop, so all supervision state is touched by one thread and needs no locks.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/signal_set.hpp"
#include "boost/asio/steady_timer.hpp"
#include "scheduler/liveness.h"

namespace orrery::scheduler {

using TimerId = int64_t;

// Threads: Post may be called from any thread. Everything else must be called from the thread
// that runs the loop (or from any one thread while the loop is not running), and every callback
// runs on that thread. Timers use the monotonic clock (Asio's steady_timer).
class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // For Asio objects that share this loop (pipes, sockets, gRPC alarms bridged in). Borrowed.
  boost::asio::io_context& context() { return context_; }

  // Runs `fn` on the loop thread soon. Thread-safe.
  void Post(std::function<void()> fn);

  // Runs `fn` once after `delay`, or every `period` (first after one period) until cancelled.
  // Cancelling an unknown, fired or already cancelled timer is a no-op.
  TimerId RunAfter(absl::Duration delay, std::function<void()> fn);
  TimerId RunEvery(absl::Duration period, std::function<void()> fn);
  void Cancel(TimerId id);

  // Calls `fn(signal)` on the loop thread whenever one of `signals` (e.g. SIGINT, SIGTERM)
  // arrives, instead of the default action, until this loop is destroyed.
  void OnSignals(const std::vector<int>& signals, std::function<void(int)> fn);

  // Runs the loop until `done()` is true, checking it after each handler; returns false if
  // `timeout` passed first (the loop is left runnable). Blocks the caller, which becomes the
  // loop thread. `done` is checked once before running anything.
  bool RunUntil(const std::function<bool()>& done, absl::Duration timeout);

  // Runs the loop until Stop() is called. Blocks; the caller becomes the loop thread.
  void Run();
  // Makes Run return soon; safe from any thread and from callbacks.
  void Stop();

 private:
  struct Timer;
  struct SignalWatch {
    std::unique_ptr<boost::asio::signal_set> set;
    std::function<void(int)> fn;
  };
  void Arm(TimerId id);
  void ArmSignals(size_t index);

  boost::asio::io_context context_;
  // Keeps Run() from returning when there is momentarily nothing to do.
  std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::map<TimerId, std::shared_ptr<Timer>> timers_;
  TimerId next_timer_ = 1;
  std::vector<SignalWatch> signal_sets_;
  Liveness liveness_;
};

// Asio installs its signal handlers without SA_RESTART, so a SIGCHLD or SIGTERM would make
// blocking calls on other threads fail with EINTR; this adds SA_RESTART to `signal`'s current
// handler. Call it right after adding `signal` to an asio::signal_set. EventLoop::OnSignals and
// LocalBackend do.
void RestartSyscallsAfter(int signal);

}  // namespace orrery::scheduler
