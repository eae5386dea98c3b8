// The `local` backend: a job's processes as children of this process on this machine, supervised
// on an EventLoop with Boost.Asio and Boost.Process. Used by `orrery run` and by the scheduler
// daemon for `backend: local`.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "scheduler/backend.h"
#include "scheduler/event_loop.h"
#include "scheduler/liveness.h"

namespace orrery::scheduler {

// Each child runs in its own process group (so Ctrl-C at the terminal reaches only the runner,
// which stops the children in order), with stdin from /dev/null and stdout/stderr on pipes read
// line by line. Signals and stops go to the whole group; when a child exits, what is left of its
// group is killed, so a stray grandchild cannot hold its pipes open.
//
// Log files: every line is appended as "<UTC time> <role> out| text" ("err|" for stderr, "sys|"
// for the backend's own notes: start, exit, restart), across restarts.
//
// Threads: not thread-safe. Construct, call and destroy it on the EventLoop's thread; all
// callbacks run there. Start blocks only for fork/exec (it returns once exec has succeeded or
// failed); the destructor kills (SIGKILL) and reaps any child still running; nothing else blocks. Children are reaped only by pid, so other code in the process may run its
// own children. It handles SIGCHLD through Asio (with SA_RESTART added, see RestartSyscallsAfter).
class LocalBackend final : public Backend {
 public:
  struct Options {
    size_t tail_lines = 200;         // lines kept per process for Tail()
    size_t max_line_bytes = kMaxOutputLineBytes;  // longer lines are split
    // Children get SIGKILL if this process dies (PR_SET_PDEATHSIG, tied to the starting thread).
    // The scheduler daemon turns it off so that jobs survive a daemon restart.
    bool kill_with_parent = true;
    // Children start with SIGPIPE ignored, so that once this process has died (and with it the
    // read ends of their output pipes) their writes fail with EPIPE instead of killing them. The
    // scheduler daemon sets it together with kill_with_parent = false.
    bool ignore_sigpipe = false;
    // Children with a log file get ORRERY_LOG_FILE and ORRERY_LOG_ROLE, with which an `orrery`
    // process whose output pipes lose their reader (this process died) carries its output into
    // the log file itself (cli/log_relay.h). The scheduler daemon sets it: its jobs outlive it.
    bool relay_output_after_exit = false;
    // After a child is reaped, how long to wait for its pipes to reach end-of-file before
    // reporting the exit anyway.
    absl::Duration drain_timeout = absl::Seconds(2);
    std::function<absl::Time()> now = [] { return absl::Now(); };  // timestamps in log files
  };

  // `loop` is borrowed and must outlive the backend.
  explicit LocalBackend(EventLoop& loop);
  LocalBackend(EventLoop& loop, Options options);
  ~LocalBackend() override;

  // Errors: INVALID_ARGUMENT (empty role or argv, duplicate role), NOT_FOUND (argv[0] not in
  // PATH), FAILED_PRECONDITION (after StopAll), the OS error of opening the log file or of
  // fork/exec (as INTERNAL/UNAVAILABLE with the role and the command named).
  absl::StatusOr<ProcessId> Start(const ProcessSpec& spec) override;
  absl::Status SetRestartArgv(ProcessId id, std::vector<std::string> argv) override;
  absl::Status Signal(ProcessId id, int signal) override;
  absl::Status Stop(ProcessId id, absl::Duration grace) override;
  void StopAll(absl::Duration grace, std::function<void()> done) override;

  absl::StatusOr<ProcessInfo> Info(ProcessId id) const override;
  std::optional<ProcessId> Find(const std::string& role) const override;
  std::vector<ProcessInfo> List() const override;
  bool AllExited() const override;
  std::vector<std::string> Tail(ProcessId id, size_t n) const override;

 private:
  struct Run;
  struct Proc;

  absl::Status Spawn(Proc& proc);
  void ReadMore(const std::shared_ptr<Run>& run, int stream);
  void Consume(Proc& proc, Run& run, int stream, const char* data, size_t n, bool eof);
  void DeliverLine(Proc& proc, const Run& run, int stream, std::string text);
  void OnSigchld();
  void ArmSigchld();
  void MaybeFinish(ProcessId id, const std::shared_ptr<Run>& run);
  void Finish(Proc& proc, Run& run);
  void Restart(ProcessId id);
  void Note(Proc& proc, const std::string& text);  // a "sys|" line: log file and tail
  void AppendToLog(Proc& proc, const std::string& tag, const std::string& text);
  void MaybeReportStopped();
  Proc* Lookup(ProcessId id) const;

  EventLoop& loop_;
  Options options_;
  std::unique_ptr<boost::asio::signal_set> sigchld_;
  std::map<ProcessId, std::unique_ptr<Proc>> procs_;
  ProcessId next_id_ = 1;
  bool stopping_all_ = false;
  std::vector<std::function<void()>> stopped_callbacks_;
  // Handlers queued in the loop check this before touching the backend.
  Liveness liveness_;
};

}  // namespace orrery::scheduler
