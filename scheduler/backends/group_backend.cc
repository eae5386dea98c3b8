#include "scheduler/backends/group_backend.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "scheduler/adopted_process.h"
#include "scheduler/backends/process_table.h"
#include "scheduler/job_report.h"

namespace orrery::scheduler {

struct GroupBackend::Proc {
  ProcessId id = 0;
  GroupId group = 0;
  int rank = 0;
  ProcessSpec spec;
  ProcessState state = ProcessState::kRunning;
  int pid = 0;           // from ORRERY_RANK
  std::string host;      // from ORRERY_RANK
  uint64_t start_ticks = 0;  // of `pid`, when it runs on this host (tells a reused pid apart)
  std::optional<int> announced_exit;  // from ORRERY_RANK_EXIT
  std::optional<ExitStatus> last_exit;
  bool stop_requested = false;
  TimerId kill_timer = 0;
  int log_fd = -1;
  std::deque<std::string> tail;
};

struct GroupBackend::Group {
  GroupId id = 0;
  std::vector<ProcessId> procs;  // by rank
  bool running = true;
  bool stopping = false;
  bool ended = false;   // the launcher has ended (GroupEnded)
  int reap_checks = 0;  // since then: checks that its ranks here are gone
};

GroupBackend::GroupBackend(EventLoop& loop, Options options) : loop_(loop), options_(std::move(options)) {
  if (options_.tail_lines == 0) options_.tail_lines = 1;
  char name[256] = {};
  ::gethostname(name, sizeof(name) - 1);
  hostname_ = name;
}

GroupBackend::~GroupBackend() {
  liveness_.Close();
  for (auto& [id, proc] : procs_) {
    if (proc->kill_timer) loop_.Cancel(proc->kill_timer);
    if (proc->log_fd >= 0) ::close(proc->log_fd);
  }
}

GroupBackend::Proc* GroupBackend::Lookup(ProcessId id) const {
  auto it = procs_.find(id);
  return it == procs_.end() ? nullptr : it->second.get();
}

GroupBackend::Group* GroupBackend::LookupGroup(GroupId id) const {
  auto it = groups_.find(id);
  return it == groups_.end() ? nullptr : it->second.get();
}

absl::StatusOr<ProcessId> GroupBackend::Start(const ProcessSpec& spec) {
  absl::StatusOr<std::vector<ProcessId>> ids = StartGroup({spec});
  if (!ids.ok()) return ids.status();
  return ids->front();
}

absl::StatusOr<std::vector<ProcessId>> GroupBackend::StartGroup(const std::vector<ProcessSpec>& specs) {
  if (stopping_all_) return absl::FailedPreconditionError("not started: the backend is stopping");
  if (specs.empty()) return absl::InvalidArgumentError("start: no processes given");
  std::set<std::string> roles;
  for (const ProcessSpec& spec : specs) {
    if (spec.role.empty()) return absl::InvalidArgumentError("process spec: empty role");
    if (spec.argv.empty() || spec.argv[0].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(spec.role, ": empty argv"));
    }
    if (!roles.insert(spec.role).second || Find(spec.role)) {
      return absl::InvalidArgumentError(absl::StrCat(spec.role, ": role already started"));
    }
  }
  auto group = std::make_unique<Group>();
  group->id = next_group_;
  std::vector<std::unique_ptr<Proc>> procs;
  for (size_t r = 0; r < specs.size(); ++r) {
    auto proc = std::make_unique<Proc>();
    proc->id = next_id_ + static_cast<ProcessId>(r);
    proc->group = group->id;
    proc->rank = static_cast<int>(r);
    proc->spec = specs[r];
    if (!proc->spec.log_path.empty()) {
      std::error_code ec;
      const std::filesystem::path parent = std::filesystem::path(proc->spec.log_path).parent_path();
      if (!parent.empty()) std::filesystem::create_directories(parent, ec);
      proc->log_fd = ::open(proc->spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (proc->log_fd < 0) {
        const std::string error = strerror(errno);
        for (auto& p : procs) ::close(p->log_fd);
        return absl::InternalError(absl::StrCat(proc->spec.role, ": cannot open log file ", proc->spec.log_path, ": ", error));
      }
    }
    group->procs.push_back(proc->id);
    procs.push_back(std::move(proc));
  }
  // Registered before launching, so that lines arriving during Launch find their process.
  const GroupId gid = group->id;
  next_group_++;
  next_id_ += static_cast<ProcessId>(specs.size());
  groups_.emplace(gid, std::move(group));
  for (auto& proc : procs) procs_.emplace(proc->id, std::move(proc));
  absl::Status launched = Launch(gid, specs);
  std::vector<ProcessId> ids = groups_[gid]->procs;
  if (!launched.ok()) {
    for (ProcessId id : ids) {
      Proc* proc = Lookup(id);
      Note(*proc, absl::StrCat("not started: ", launched.message()));
      if (proc->log_fd >= 0) ::close(proc->log_fd);
      procs_.erase(id);
    }
    groups_.erase(gid);
    return launched;
  }
  for (ProcessId id : ids) {
    Proc* proc = Lookup(id);
    Note(*proc, absl::StrCat("started as rank ", proc->rank, " of ", ids.size(), ": ", absl::StrJoin(proc->spec.argv, " ")));
    if (proc->spec.restart.max_restarts > 0) {
      Note(*proc, "restart policy not applied: the ranks of a launch run once");
    }
  }
  return ids;
}

void GroupBackend::AppendToLog(Proc& proc, const std::string& tag, const std::string& text) {
  KeepTail(proc.tail, options_.tail_lines, absl::StrCat(tag, "| ", text));
  if (proc.log_fd >= 0) AppendLogRecord(proc.log_fd, options_.now(), proc.spec.role, tag, text);
}

void GroupBackend::Note(Proc& proc, const std::string& text) { AppendToLog(proc, "sys", text); }

void GroupBackend::RankLine(GroupId gid, int rank, Stream stream, std::string text) {
  Group* group = LookupGroup(gid);
  if (group == nullptr || rank < 0 || rank >= static_cast<int>(group->procs.size())) return;
  Proc* proc = Lookup(group->procs[rank]);
  if (proc == nullptr) return;
  if (!text.empty() && text.back() == '\r') text.pop_back();
  if (stream == Stream::kStdout) {
    std::string tag;
    nlohmann::json body;
    if (ParseTagged(text, &tag, &body)) {
      if (tag == "ORRERY_RANK") {
        proc->pid = body.value("pid", 0);
        proc->host = body.value("host", "");
        if (LocalRank(*proc)) proc->start_ticks = ProcessStartTicks(proc->pid).value_or(0);
      } else if (tag == "ORRERY_RANK_EXIT") {
        proc->announced_exit = body.value("code", 0);
      }
    }
  }
  AppendToLog(*proc, stream == Stream::kStdout ? "out" : "err", text);
  OutputLine line;
  line.id = proc->id;
  line.role = proc->spec.role;
  line.stream = stream;
  line.text = std::move(text);
  EmitLine(line);
}

void GroupBackend::LauncherLine(GroupId gid, const std::string& text) {
  Group* group = LookupGroup(gid);
  if (group == nullptr) return;
  for (ProcessId id : group->procs) {
    if (Proc* proc = Lookup(id)) Note(*proc, text);
  }
}

void GroupBackend::GroupEnded(GroupId gid, const ExitStatus& launcher, const std::string& error) {
  Group* group = LookupGroup(gid);
  if (group == nullptr || !group->running || group->ended) return;
  group->ended = true;
  ReportEnded(gid, launcher, error);
}

void GroupBackend::ReportEnded(GroupId gid, const ExitStatus& launcher, const std::string& error) {
  Group* group = LookupGroup(gid);
  if (group == nullptr || !group->running) return;
  // A launcher may end before every rank it started here has (mpirun that gave up on a job it
  // was stopping): such a rank gets SIGKILL, and the exits are reported once it is gone, so that
  // an exit always means the process no longer runs.
  constexpr int kReapChecks = 100;  // 50 ms apart
  bool waiting = false;
  for (ProcessId id : group->procs) {
    Proc* proc = Lookup(id);
    if (!LocalRank(*proc) || proc->start_ticks == 0 || ProcessStartTicks(proc->pid) != proc->start_ticks) continue;
    waiting = true;
    if (group->reap_checks == 0) {
      Note(*proc, absl::StrCat("still running after the launcher ended: SIGKILL to pid ", proc->pid));
      ::kill(proc->pid, SIGKILL);
    }
  }
  if (waiting && group->reap_checks < kReapChecks) {
    ++group->reap_checks;
    loop_.RunAfter(absl::Milliseconds(50),
                   liveness_.Guard([this, gid, launcher, error] { ReportEnded(gid, launcher, error); }));
    return;
  }
  group->running = false;
  std::vector<ProcessExit> exits;
  for (ProcessId id : group->procs) {
    Proc* proc = Lookup(id);
    if (proc->kill_timer) loop_.Cancel(proc->kill_timer);
    proc->kill_timer = 0;
    ExitStatus status = proc->announced_exit ? ExitStatus{*proc->announced_exit, 0} : launcher;
    proc->state = ProcessState::kExited;
    proc->last_exit = status;
    ProcessExit exit;
    exit.id = proc->id;
    exit.role = proc->spec.role;
    exit.status = status;
    exit.stop_requested = proc->stop_requested || group->stopping || stopping_all_;
    exit.error = error;
    if (!error.empty()) Note(*proc, error);
    Note(*proc, absl::StrCat("exited: ", status.ToString(), proc->announced_exit ? "" : " (the launcher's status)",
                             exit.stop_requested ? " (stop requested)" : ""));
    exits.push_back(exit);
  }
  for (const ProcessExit& exit : exits) EmitExit(exit);
  MaybeReportStopped();
}

std::vector<std::string> GroupBackend::GroupRoles(GroupId gid) const {
  std::vector<std::string> roles;
  if (Group* group = LookupGroup(gid)) {
    for (ProcessId id : group->procs) roles.push_back(Lookup(id)->spec.role);
  }
  return roles;
}

bool GroupBackend::GroupRunning(GroupId gid) const {
  Group* group = LookupGroup(gid);
  return group != nullptr && group->running;
}

absl::Status GroupBackend::SetRestartArgv(ProcessId id, std::vector<std::string> argv) {
  Proc* proc = Lookup(id);
  if (proc == nullptr) return absl::NotFoundError(absl::StrCat("no process with id ", id));
  if (argv.empty() || argv[0].empty()) return absl::InvalidArgumentError(absl::StrCat(proc->spec.role, ": empty argv"));
  Note(*proc, "restart argv recorded; ranks are not restarted");
  return absl::OkStatus();
}

bool GroupBackend::LocalRank(const Proc& proc) const { return proc.pid > 0 && proc.host == hostname_; }

absl::Status GroupBackend::Signal(ProcessId id, int signal) {
  Proc* proc = Lookup(id);
  if (proc == nullptr) return absl::NotFoundError(absl::StrCat("no process with id ", id));
  if (proc->state != ProcessState::kRunning) {
    return absl::FailedPreconditionError(absl::StrCat(proc->spec.role, ": not running"));
  }
  if (!LocalRank(*proc)) {
    return absl::FailedPreconditionError(absl::StrCat(
        proc->spec.role, ": cannot signal one rank of this launch (its pid is unknown or it runs on another host)"));
  }
  if (::kill(proc->pid, signal) != 0) {
    return absl::InternalError(absl::StrCat(proc->spec.role, ": kill(", signal, "): ", strerror(errno)));
  }
  return absl::OkStatus();
}

void GroupBackend::StopWholeGroup(Group& group, absl::Duration grace) {
  if (group.stopping || !group.running) return;
  group.stopping = true;
  for (ProcessId id : group.procs) Note(*Lookup(id), absl::StrCat("stopping the whole launch (grace ", absl::FormatDuration(grace), ")"));
  StopGroup(group.id, grace);
}

absl::Status GroupBackend::Stop(ProcessId id, absl::Duration grace) {
  Proc* proc = Lookup(id);
  if (proc == nullptr) return absl::NotFoundError(absl::StrCat("no process with id ", id));
  if (proc->state == ProcessState::kExited) return absl::OkStatus();
  Group& group = *LookupGroup(proc->group);
  if (!LocalRank(*proc) || proc->announced_exit) {
    proc->stop_requested = true;
    StopWholeGroup(group, grace);
    return absl::OkStatus();
  }
  if (proc->stop_requested && grace > absl::ZeroDuration()) return absl::OkStatus();
  proc->stop_requested = true;
  const int sig = grace <= absl::ZeroDuration() ? SIGKILL : SIGTERM;
  Note(*proc, absl::StrCat("stop requested: ", sig == SIGKILL ? "SIGKILL" : "SIGTERM", " to pid ", proc->pid));
  ::kill(proc->pid, sig);
  if (sig == SIGTERM) {
    proc->kill_timer = loop_.RunAfter(grace, liveness_.Guard([this, id] {
      Proc* proc = Lookup(id);
      if (proc == nullptr || proc->state == ProcessState::kExited || proc->announced_exit) return;
      proc->kill_timer = 0;
      Note(*proc, "grace period over: SIGKILL");
      ::kill(proc->pid, SIGKILL);
    }));
  }
  return absl::OkStatus();
}

void GroupBackend::StopAll(absl::Duration grace, std::function<void()> done) {
  stopping_all_ = true;
  if (done) stopped_callbacks_.push_back(std::move(done));
  std::vector<GroupId> running;
  for (const auto& [gid, group] : groups_) {
    if (group->running) running.push_back(gid);
  }
  for (GroupId gid : running) {
    Group* group = LookupGroup(gid);
    if (group->stopping && grace <= absl::ZeroDuration()) {
      StopGroup(gid, grace);  // a second StopAll with no grace: force it now
    } else {
      StopWholeGroup(*group, grace);
    }
  }
  MaybeReportStopped();
}

void GroupBackend::MaybeReportStopped() {
  if (!stopping_all_ || stopped_callbacks_.empty() || !AllExited()) return;
  std::vector<std::function<void()>> callbacks;
  callbacks.swap(stopped_callbacks_);
  for (auto& callback : callbacks) loop_.Post(liveness_.Guard(std::move(callback)));
}

absl::StatusOr<ProcessInfo> GroupBackend::Info(ProcessId id) const {
  Proc* proc = Lookup(id);
  if (proc == nullptr) return absl::NotFoundError(absl::StrCat("no process with id ", id));
  ProcessInfo info;
  info.id = proc->id;
  info.role = proc->spec.role;
  info.state = proc->state;
  info.pid = proc->state == ProcessState::kRunning && LocalRank(*proc) ? proc->pid : 0;  // pids elsewhere mean nothing here
  info.last_exit = proc->last_exit;
  info.log_path = proc->spec.log_path;
  return info;
}

std::optional<ProcessId> GroupBackend::Find(const std::string& role) const { return FindRole(procs_, role); }

std::vector<ProcessInfo> GroupBackend::List() const {
  std::vector<ProcessInfo> out;
  for (const auto& [id, proc] : procs_) out.push_back(*Info(id));
  return out;
}

bool GroupBackend::AllExited() const { return EveryProcessExited(procs_); }

std::vector<std::string> GroupBackend::Tail(ProcessId id, size_t n) const {
  Proc* proc = Lookup(id);
  return proc == nullptr ? std::vector<std::string>() : NewestLines(proc->tail, n);
}

}  // namespace orrery::scheduler
