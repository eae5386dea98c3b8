// The interface every process backend implements (local now; mpi, slurm, kubernetes later): start
// a job's processes, stream their output lines, report their exits, restart them per policy, and
// stop them. `orrery run` and the scheduler daemon drive jobs only through this interface.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "scheduler/restart_policy.h"

namespace orrery::scheduler {

// What to run for one role of a job.
struct ProcessSpec {
  std::string role;                       // unique per backend: "server-0", "learner-3"
  std::vector<std::string> argv;          // argv[0]: a path, or a name looked up in PATH
  std::map<std::string, std::string> env; // added to (and overriding) the backend's environment
  std::string log_path;                   // every line, prefixed, appended here; "" = no log file
  std::string working_dir;                // "" = the backend's current directory
  RestartPolicy restart;                  // default: never restart
};

using ProcessId = int64_t;

// How a process ended: exactly one of `exit_code` (>= 0) and `signal` (> 0) is meaningful.
struct ExitStatus {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // 0 when it exited normally
  bool ok() const { return signal == 0 && exit_code == 0; }
  std::string ToString() const;  // "exit code 3", "killed by signal 9 (SIGKILL)"
};

enum class Stream { kStdout, kStderr };

// One line of a process's output, without its newline. Lines of one stream arrive in order;
// stdout and stderr are not ordered against each other. Over-long lines are split.
struct OutputLine {
  ProcessId id = 0;
  std::string role;
  int incarnation = 0;  // 0 for the first start, k after the k-th restart
  Stream stream = Stream::kStdout;
  std::string text;
};

// The longest line a backend passes on whole, unless told otherwise (LocalBackend::Options).
inline constexpr size_t kMaxOutputLineBytes = 65536;

// Cuts a stream of output, read in pieces, into lines without their newlines. Append passes on
// each line completed by `data`, and, of a line still without its newline, each max_line_bytes
// once it has that many (a longer line is split); Finish passes on the rest at end-of-file.
class LineSplitter {
 public:
  void Append(absl::string_view data, size_t max_line_bytes,
              absl::FunctionRef<void(std::string)> line);
  void Finish(absl::FunctionRef<void(std::string)> line);

 private:
  std::string partial_;
};

// One line of a process's log file, without its newline: "<UTC time to the ms> <role> <tag>| <text>",
// tag "out", "err" or "sys" (the backend's own notes). The time has a fixed width, so lines sort by
// time as text.
std::string FormatLogRecord(absl::Time time, absl::string_view role, absl::string_view tag,
                            absl::string_view text);

// Appends that record and its newline to `fd` (a log file opened O_APPEND). A failed write (a full
// disk) loses the record and nothing else: supervision goes on.
void AppendLogRecord(int fd, absl::Time time, absl::string_view role, absl::string_view tag,
                     absl::string_view text);

// A process ended (or a process waiting to be restarted was given up by a stop). Reported after
// all of its output lines.
struct ProcessExit {
  ProcessId id = 0;
  std::string role;
  int incarnation = 0;
  ExitStatus status;
  bool stop_requested = false;  // it was asked to stop (Stop, StopAll); not a failure of the job
  bool will_restart = false;    // the restart policy will start it again after `restart_delay`
  absl::Duration restart_delay = absl::ZeroDuration();
  std::string error;            // set when a restart could not be spawned ("exec failed: ...")
  // True when this is the process's last event: it will not run again.
  bool final() const { return !will_restart; }
};

enum class ProcessState {
  kRunning,     // started, not yet reaped
  kRestarting,  // failed; waiting out the restart delay
  kExited,      // done for good (see last_exit)
};

struct ProcessInfo {
  ProcessId id = 0;
  std::string role;
  ProcessState state = ProcessState::kRunning;
  int pid = 0;          // OS pid of the current incarnation (0 if not running; backend-specific)
  int incarnation = 0;  // also the number of restarts made
  std::optional<ExitStatus> last_exit;
  std::string log_path;
  // Local backend: what starting this process afresh would run (its spec, with the argv of its
  // next restart). Other backends: none.
  std::optional<ProcessSpec> relaunch;
};

using LineCallback = std::function<void(const OutputLine&)>;
using ExitCallback = std::function<void(const ProcessExit&)>;
using ListenerId = int64_t;

// Implementations document their threading; the contract shared by all: every method and every
// callback runs on the backend's event-loop thread, and callbacks may call back into the backend
// (start, stop, add or remove listeners) — a listener added during a callback first sees the next
// event. Listeners are called in the order they were added.
class Backend {
 public:
  virtual ~Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // Starts a process. Fails (INVALID_ARGUMENT / FAILED_PRECONDITION / the OS error) without
  // leaving anything running; the role must be new.
  virtual absl::StatusOr<ProcessId> Start(const ProcessSpec& spec) = 0;

  // Starts a whole group at once, all or nothing: on the first failure the ones already started
  // are killed at once (their exits arrive with stop_requested set) and the error is returned.
  // Backends that launch a job as one unit (mpirun, sbatch, a StatefulSet) override this; the
  // default starts each spec in order.
  virtual absl::StatusOr<std::vector<ProcessId>> StartGroup(const std::vector<ProcessSpec>& specs);

  // Replaces the argv used by the next restart of `id` (e.g. to restart a server on the port it
  // was given on its first start). Does not affect the running incarnation.
  virtual absl::Status SetRestartArgv(ProcessId id, std::vector<std::string> argv) = 0;

  // Sends `signal` to the process (and, where the backend groups them, its descendants).
  virtual absl::Status Signal(ProcessId id, int signal) = 0;

  // Asks one process to stop: SIGTERM (or the backend's equivalent), then a forced kill after
  // `grace`. It is not restarted. Returns at once; the exit arrives as an ExitCallback.
  virtual absl::Status Stop(ProcessId id, absl::Duration grace) = 0;

  // Stops every process as Stop does, cancels pending restarts and refuses later Starts.
  // `done` runs (on the loop thread, never inside this call) once all have exited. Calling it
  // again while stopping forces the kill now if `grace` is zero, and adds `done`.
  virtual void StopAll(absl::Duration grace, std::function<void()> done) = 0;

  virtual absl::StatusOr<ProcessInfo> Info(ProcessId id) const = 0;
  virtual std::optional<ProcessId> Find(const std::string& role) const = 0;
  virtual std::vector<ProcessInfo> List() const = 0;
  // True when no process is running or waiting to restart.
  virtual bool AllExited() const = 0;
  // The last `n` (at most the backend's retention) lines of `id`, oldest first, across its
  // incarnations: "out| text", "err| text", and the backend's own "sys| exited: exit code 2".
  virtual std::vector<std::string> Tail(ProcessId id, size_t n) const = 0;

  ListenerId AddLineListener(LineCallback callback);
  ListenerId AddExitListener(ExitCallback callback);
  void RemoveListener(ListenerId id);

 protected:
  Backend() = default;
  // Delivers an event to every current listener. Reentrant: listeners may add or remove listeners.
  void EmitLine(const OutputLine& line);
  void EmitExit(const ProcessExit& exit);

 private:
  ListenerId next_listener_ = 1;
  std::map<ListenerId, std::shared_ptr<LineCallback>> line_listeners_;
  std::map<ListenerId, std::shared_ptr<ExitCallback>> exit_listeners_;
};

const char* ProcessStateName(ProcessState state);  // "running", "restarting", "exited"

}  // namespace orrery::scheduler
