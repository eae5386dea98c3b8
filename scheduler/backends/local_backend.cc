#include "scheduler/backends/local_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <deque>
#include <filesystem>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "boost/asio/read.hpp"
#include "boost/process/args.hpp"
#include "boost/process/async_pipe.hpp"
#include "boost/process/child.hpp"
#include "boost/process/env.hpp"
#include "boost/process/environment.hpp"
#include "boost/process/exe.hpp"
#include "boost/process/extend.hpp"
#include "boost/process/io.hpp"
#include "boost/process/search_path.hpp"
#include "boost/process/start_dir.hpp"
#include "scheduler/backends/process_table.h"

namespace orrery::scheduler {
namespace bp = boost::process;

namespace {

constexpr int kOut = 0;
constexpr int kErr = 1;
const char* const kTags[] = {"out", "err"};

// Runs in the child between fork and exec: its own process group, default signal handling, and
// optionally death with the parent. Only async-signal-safe calls here.
struct ChildSetup : bp::extend::handler {
  bool kill_with_parent = true;
  bool ignore_sigpipe = false;
  pid_t parent = 0;

  template <typename Executor>
  void on_exec_setup(Executor&) const {
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) ::signal(s, SIG_DFL);
    if (ignore_sigpipe) ::signal(SIGPIPE, SIG_IGN);  // inherited across exec
    if (kill_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    }
  }
};

void SetCloexec(int fd) {
  if (fd < 0) return;
  int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

std::string CommandLine(const std::vector<std::string>& argv) { return absl::StrJoin(argv, " "); }

}  // namespace

// One incarnation of a process: its pid, pipes and exit status. Read handlers hold it alive.
struct LocalBackend::Run {
  ProcessId id = 0;
  int number = 0;
  pid_t pid = 0;
  std::array<std::unique_ptr<bp::async_pipe>, 2> pipes;
  std::array<std::array<char, 4096>, 2> buffers;
  std::array<LineSplitter, 2> lines;
  std::array<bool, 2> open = {true, true};
  bool reaped = false;
  bool finished = false;
  ExitStatus status;
  TimerId drain_timer = 0;

  void ClosePipes() {
    for (auto& p : pipes) {
      if (p) {
        boost::system::error_code ignored;
        p->close(ignored);
      }
    }
  }
};

struct LocalBackend::Proc {
  ProcessId id = 0;
  ProcessSpec spec;
  std::vector<std::string> next_argv;
  ProcessState state = ProcessState::kRunning;
  int incarnation = 0;
  std::shared_ptr<Run> run;
  std::optional<ExitStatus> last_exit;
  bool stop_requested = false;
  TimerId kill_timer = 0;
  TimerId restart_timer = 0;
  int log_fd = -1;
  std::deque<std::string> tail;
};

LocalBackend::LocalBackend(EventLoop& loop) : LocalBackend(loop, Options()) {}

LocalBackend::LocalBackend(EventLoop& loop, Options options)
    : loop_(loop),
      options_(std::move(options)),
      sigchld_(std::make_unique<boost::asio::signal_set>(loop.context(), SIGCHLD)) {
  RestartSyscallsAfter(SIGCHLD);
  if (options_.tail_lines == 0) options_.tail_lines = 1;
  if (options_.max_line_bytes == 0) options_.max_line_bytes = 1;
  ArmSigchld();
}

LocalBackend::~LocalBackend() {
  liveness_.Close();
  boost::system::error_code ignored;
  sigchld_->cancel(ignored);
  for (auto& [id, proc] : procs_) {
    if (proc->kill_timer) loop_.Cancel(proc->kill_timer);
    if (proc->restart_timer) loop_.Cancel(proc->restart_timer);
    if (Run* run = proc->run.get()) {
      if (run->drain_timer) loop_.Cancel(run->drain_timer);
      if (!run->reaped) {
        ::kill(-run->pid, SIGKILL);
        int status = 0;
        while (::waitpid(run->pid, &status, 0) < 0 && errno == EINTR) {
        }
      }
      run->ClosePipes();
    }
    if (proc->log_fd >= 0) ::close(proc->log_fd);
  }
}

void LocalBackend::ArmSigchld() {
  sigchld_->async_wait(liveness_.Guard([this](const boost::system::error_code& ec, int) {
    if (ec) return;
    ArmSigchld();
    OnSigchld();
  }));
}

LocalBackend::Proc* LocalBackend::Lookup(ProcessId id) const {
  auto it = procs_.find(id);
  return it == procs_.end() ? nullptr : it->second.get();
}

absl::StatusOr<ProcessId> LocalBackend::Start(const ProcessSpec& spec) {
  if (stopping_all_) {
    return absl::FailedPreconditionError(absl::StrCat(spec.role, ": not started, the backend is stopping"));
  }
  if (spec.role.empty()) return absl::InvalidArgumentError("process spec: empty role");
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(spec.role, ": empty argv"));
  }
  if (Find(spec.role)) return absl::InvalidArgumentError(absl::StrCat(spec.role, ": role already started"));

  auto proc = std::make_unique<Proc>();
  proc->id = next_id_;
  proc->spec = spec;
  proc->next_argv = spec.argv;
  if (!spec.log_path.empty()) {
    std::error_code ec;
    std::filesystem::path parent = std::filesystem::path(spec.log_path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    proc->log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (proc->log_fd < 0) {
      return absl::InternalError(absl::StrCat(spec.role, ": cannot open log file ", spec.log_path, ": ",
                                              strerror(errno)));
    }
  }
  absl::Status spawned = Spawn(*proc);
  if (!spawned.ok()) {
    Note(*proc, absl::StrCat("not started: ", spawned.message()));
    if (proc->log_fd >= 0) ::close(proc->log_fd);
    return spawned;
  }
  ProcessId id = next_id_++;
  procs_.emplace(id, std::move(proc));
  return id;
}

absl::Status LocalBackend::Spawn(Proc& proc) {
  const std::vector<std::string>& argv = proc.spec.argv;
  boost::filesystem::path exe = argv[0];
  if (argv[0].find('/') == std::string::npos) {
    exe = bp::search_path(argv[0]);
    if (exe.empty()) {
      return absl::NotFoundError(absl::StrCat(proc.spec.role, ": '", argv[0], "' not found in PATH"));
    }
  }
  auto run = std::make_shared<Run>();
  run->id = proc.id;
  run->number = proc.incarnation;
  try {
    run->pipes[kOut] = std::make_unique<bp::async_pipe>(loop_.context());
    run->pipes[kErr] = std::make_unique<bp::async_pipe>(loop_.context());
    for (auto& p : run->pipes) {
      SetCloexec(p->native_source());
      SetCloexec(p->native_sink());
    }
    bp::environment env = boost::this_process::environment();
    for (const auto& [key, value] : proc.spec.env) env[key] = value;
    if (options_.relay_output_after_exit && !proc.spec.log_path.empty()) {
      env["ORRERY_LOG_FILE"] = proc.spec.log_path;
      env["ORRERY_LOG_ROLE"] = proc.spec.role;
    }
    ChildSetup setup;
    setup.kill_with_parent = options_.kill_with_parent;
    setup.ignore_sigpipe = options_.ignore_sigpipe;
    setup.parent = ::getpid();
    std::vector<std::string> args(argv.begin() + 1, argv.end());
    boost::filesystem::path dir =
        proc.spec.working_dir.empty() ? boost::filesystem::current_path() : boost::filesystem::path(proc.spec.working_dir);
    bp::child child(bp::exe = exe, bp::args = args, bp::std_in < bp::null, bp::std_out > *run->pipes[kOut],
                    bp::std_err > *run->pipes[kErr], bp::env = env, bp::start_dir = dir, setup);
    run->pid = child.id();
    child.detach();  // reaped by OnSigchld, by pid
  } catch (const std::exception& e) {
    run->ClosePipes();
    return absl::UnavailableError(
        absl::StrCat(proc.spec.role, ": cannot start '", CommandLine(argv), "': ", e.what()));
  }
  proc.run = run;
  proc.state = ProcessState::kRunning;
  Note(proc, absl::StrCat(proc.incarnation == 0 ? "started" : "restarted", " pid ", run->pid, ": ",
                          CommandLine(argv)));
  ReadMore(run, kOut);
  ReadMore(run, kErr);
  return absl::OkStatus();
}

void LocalBackend::ReadMore(const std::shared_ptr<Run>& run, int stream) {
  run->pipes[stream]->async_read_some(
      boost::asio::buffer(run->buffers[stream]),
      liveness_.Guard([this, run, stream](const boost::system::error_code& ec, size_t n) {
        if (!run->open[stream]) return;
        Proc* proc = Lookup(run->id);
        if (proc == nullptr) return;
        Consume(*proc, *run, stream, run->buffers[stream].data(), n, /*eof=*/bool(ec));
        if (ec) {
          run->open[stream] = false;
          MaybeFinish(run->id, run);
          return;
        }
        ReadMore(run, stream);
      }));
}

void LocalBackend::Consume(Proc& proc, Run& run, int stream, const char* data, size_t n, bool eof) {
  auto deliver = [&](std::string line) { DeliverLine(proc, run, stream, std::move(line)); };
  run.lines[stream].Append(absl::string_view(data, n), options_.max_line_bytes, deliver);
  if (eof) run.lines[stream].Finish(deliver);
}

void LocalBackend::DeliverLine(Proc& proc, const Run& run, int stream, std::string text) {
  if (!text.empty() && text.back() == '\r') text.pop_back();
  AppendToLog(proc, kTags[stream], text);
  OutputLine line;
  line.id = proc.id;
  line.role = proc.spec.role;
  line.incarnation = run.number;
  line.stream = stream == kOut ? Stream::kStdout : Stream::kStderr;
  line.text = std::move(text);
  EmitLine(line);
}

void LocalBackend::AppendToLog(Proc& proc, const std::string& tag, const std::string& text) {
  KeepTail(proc.tail, options_.tail_lines, absl::StrCat(tag, "| ", text));
  // A full disk must not stop supervision; the lines still reach listeners.
  if (proc.log_fd >= 0) AppendLogRecord(proc.log_fd, options_.now(), proc.spec.role, tag, text);
}

void LocalBackend::Note(Proc& proc, const std::string& text) { AppendToLog(proc, "sys", text); }

void LocalBackend::OnSigchld() {
  std::vector<std::shared_ptr<Run>> reaped;
  for (auto& [id, proc] : procs_) {
    const std::shared_ptr<Run>& run = proc->run;
    if (proc->state != ProcessState::kRunning || !run || run->reaped) continue;
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(run->pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0) continue;
    run->reaped = true;
    if (r < 0) {
      run->status = ExitStatus{};  // reaped elsewhere (ECHILD): the status is unknown
    } else if (WIFSIGNALED(status)) {
      run->status = ExitStatus{-1, WTERMSIG(status)};
    } else {
      run->status = ExitStatus{WEXITSTATUS(status), 0};
    }
    ::kill(-run->pid, SIGKILL);  // whatever is left of its process group
    reaped.push_back(run);
  }
  for (const std::shared_ptr<Run>& run : reaped) {
    if (run->open[kOut] || run->open[kErr]) {
      run->drain_timer = loop_.RunAfter(options_.drain_timeout, liveness_.Guard([this, run] {
        run->drain_timer = 0;
        Proc* proc = Lookup(run->id);
        for (int s : {kOut, kErr}) {
          if (run->open[s] && proc != nullptr) Consume(*proc, *run, s, nullptr, 0, /*eof=*/true);
          run->open[s] = false;
        }
        run->ClosePipes();
        MaybeFinish(run->id, run);
      }));
    }
    MaybeFinish(run->id, run);
  }
}

void LocalBackend::MaybeFinish(ProcessId id, const std::shared_ptr<Run>& run) {
  if (!run->reaped || run->open[kOut] || run->open[kErr] || run->finished) return;
  Proc* proc = Lookup(id);
  if (proc == nullptr || proc->run != run) return;
  Finish(*proc, *run);
}

void LocalBackend::Finish(Proc& proc, Run& run) {
  run.finished = true;
  if (run.drain_timer) loop_.Cancel(run.drain_timer);
  run.drain_timer = 0;
  run.ClosePipes();
  if (proc.kill_timer) loop_.Cancel(proc.kill_timer);
  proc.kill_timer = 0;
  proc.last_exit = run.status;

  ProcessExit exit;
  exit.id = proc.id;
  exit.role = proc.spec.role;
  exit.incarnation = run.number;
  exit.status = run.status;
  exit.stop_requested = proc.stop_requested || stopping_all_;
  std::optional<absl::Duration> delay =
      NextRestartDelay(proc.spec.restart, proc.incarnation, !run.status.ok(), exit.stop_requested);
  if (delay) {
    exit.will_restart = true;
    exit.restart_delay = *delay;
    proc.state = ProcessState::kRestarting;
    ProcessId id = proc.id;
    proc.restart_timer = loop_.RunAfter(*delay, [this, id] { Restart(id); });
    Note(proc, absl::StrCat("exited: ", run.status.ToString(), "; restart ", proc.incarnation + 1, " of ",
                            proc.spec.restart.max_restarts, " in ", absl::FormatDuration(*delay)));
  } else {
    proc.state = ProcessState::kExited;
    Note(proc, absl::StrCat("exited: ", run.status.ToString(), exit.stop_requested ? " (stop requested)" : ""));
  }
  EmitExit(exit);
  MaybeReportStopped();
}

void LocalBackend::Restart(ProcessId id) {
  Proc* proc = Lookup(id);
  if (proc == nullptr || proc->state != ProcessState::kRestarting) return;
  proc->restart_timer = 0;
  proc->incarnation++;
  proc->spec.argv = proc->next_argv;
  absl::Status spawned = Spawn(*proc);
  if (spawned.ok()) return;
  Note(*proc, absl::StrCat("restart failed: ", spawned.message()));
  proc->state = ProcessState::kExited;
  ProcessExit exit;
  exit.id = proc->id;
  exit.role = proc->spec.role;
  exit.incarnation = proc->incarnation;
  exit.status = proc->last_exit.value_or(ExitStatus{});
  exit.error = std::string(spawned.message());
  EmitExit(exit);
  MaybeReportStopped();
}

absl::Status LocalBackend::SetRestartArgv(ProcessId id, std::vector<std::string> argv) {
  Proc* proc = Lookup(id);
  if (proc == nullptr) return absl::NotFoundError(absl::StrCat("no process with id ", id));
  if (argv.empty() || argv[0].empty()) return absl::InvalidArgumentError(absl::StrCat(proc->spec.role, ": empty argv"));
  proc->next_argv = std::move(argv);
  return absl::OkStatus();
}

absl::Status LocalBackend::Signal(ProcessId id, int signal) {
  Proc* proc = Lookup(id);
  if (proc == nullptr) return absl::NotFoundError(absl::StrCat("no process with id ", id));
  if (proc->state != ProcessState::kRunning || proc->run->reaped) {
    return absl::FailedPreconditionError(absl::StrCat(proc->spec.role, ": not running"));
  }
  if (::kill(-proc->run->pid, signal) != 0) {
    return absl::InternalError(absl::StrCat(proc->spec.role, ": kill(", signal, "): ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status LocalBackend::Stop(ProcessId id, absl::Duration grace) {
  Proc* proc = Lookup(id);
  if (proc == nullptr) return absl::NotFoundError(absl::StrCat("no process with id ", id));
  switch (proc->state) {
    case ProcessState::kExited:
      return absl::OkStatus();
    case ProcessState::kRestarting: {
      loop_.Cancel(proc->restart_timer);
      proc->restart_timer = 0;
      proc->stop_requested = true;
      proc->state = ProcessState::kExited;
      Note(*proc, "restart cancelled (stop requested)");
      ProcessExit exit;
      exit.id = proc->id;
      exit.role = proc->spec.role;
      exit.incarnation = proc->incarnation;
      exit.status = proc->last_exit.value_or(ExitStatus{});
      exit.stop_requested = true;
      EmitExit(exit);
      MaybeReportStopped();
      return absl::OkStatus();
    }
    case ProcessState::kRunning:
      break;
  }
  Run& run = *proc->run;
  if (run.reaped) {  // exited; only its output is still draining
    proc->stop_requested = true;
    return absl::OkStatus();
  }
  if (grace <= absl::ZeroDuration()) {
    Note(*proc, "stop requested: SIGKILL");
    ::kill(-run.pid, SIGKILL);
    proc->stop_requested = true;
    return absl::OkStatus();
  }
  if (proc->stop_requested) return absl::OkStatus();  // already terminating; its kill timer stands
  proc->stop_requested = true;
  Note(*proc, absl::StrCat("stop requested: SIGTERM, SIGKILL after ", absl::FormatDuration(grace)));
  ::kill(-run.pid, SIGTERM);
  std::weak_ptr<Run> weak_run = proc->run;
  proc->kill_timer = loop_.RunAfter(grace, [this, id, weak_run] {
    std::shared_ptr<Run> run = weak_run.lock();
    Proc* proc = Lookup(id);
    if (!run || proc == nullptr || run->reaped) return;
    proc->kill_timer = 0;
    Note(*proc, "grace period over: SIGKILL");
    ::kill(-run->pid, SIGKILL);
  });
  return absl::OkStatus();
}

void LocalBackend::StopAll(absl::Duration grace, std::function<void()> done) {
  stopping_all_ = true;
  if (done) stopped_callbacks_.push_back(std::move(done));
  std::vector<ProcessId> ids;
  for (const auto& [id, proc] : procs_) ids.push_back(id);
  for (ProcessId id : ids) Stop(id, grace).IgnoreError();
  MaybeReportStopped();
}

void LocalBackend::MaybeReportStopped() {
  if (!stopping_all_ || stopped_callbacks_.empty() || !AllExited()) return;
  std::vector<std::function<void()>> callbacks;
  callbacks.swap(stopped_callbacks_);
  for (auto& callback : callbacks) loop_.Post(liveness_.Guard(std::move(callback)));
}

absl::StatusOr<ProcessInfo> LocalBackend::Info(ProcessId id) const {
  Proc* proc = Lookup(id);
  if (proc == nullptr) return absl::NotFoundError(absl::StrCat("no process with id ", id));
  ProcessInfo info;
  info.id = proc->id;
  info.role = proc->spec.role;
  info.state = proc->state;
  info.pid = proc->state == ProcessState::kRunning && proc->run ? proc->run->pid : 0;
  info.incarnation = proc->incarnation;
  info.last_exit = proc->last_exit;
  info.log_path = proc->spec.log_path;
  info.relaunch = proc->spec;
  info.relaunch->argv = proc->next_argv;
  return info;
}

std::optional<ProcessId> LocalBackend::Find(const std::string& role) const { return FindRole(procs_, role); }

std::vector<ProcessInfo> LocalBackend::List() const {
  std::vector<ProcessInfo> out;
  for (const auto& [id, proc] : procs_) out.push_back(*Info(id));
  return out;
}

bool LocalBackend::AllExited() const { return EveryProcessExited(procs_); }

std::vector<std::string> LocalBackend::Tail(ProcessId id, size_t n) const {
  Proc* proc = Lookup(id);
  return proc == nullptr ? std::vector<std::string>() : NewestLines(proc->tail, n);
}

}  // namespace orrery::scheduler
