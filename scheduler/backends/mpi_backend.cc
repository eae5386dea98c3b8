#include "scheduler/backends/mpi_backend.h"

#include <signal.h>
#include <unistd.h>

#include <regex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "scheduler/backends/job_ranks.h"
#include "scheduler/backends/process_tree.h"

namespace orrery::scheduler {

MpiBackend::MpiBackend(EventLoop& loop) : MpiBackend(loop, Options()) {}

MpiBackend::MpiBackend(EventLoop& loop, Options options)
    : GroupBackend(loop, options.group), options_(std::move(options)), launcher_(loop, options_.launcher) {
  launcher_.AddLineListener([this](const OutputLine& line) { OnLauncherLine(line); });
  launcher_.AddExitListener([this](const ProcessExit& exit) { OnLauncherExit(exit); });
}

MpiBackend::~MpiBackend() {
  for (auto& [gid, timer] : kill_timers_) loop().Cancel(timer);
  // launcher_'s destructor SIGKILLs a running mpirun; the ranks it started must go too.
  for (const ProcessInfo& info : launcher_.List()) {
    if (info.state == ProcessState::kRunning && info.pid > 0) SignalTree(info.pid, SIGKILL);
  }
}

absl::StatusOr<std::vector<std::string>> MpiBackend::MpirunArgv(const std::vector<ProcessSpec>& specs) const {
  if (specs.empty()) return absl::InvalidArgumentError("mpirun: no ranks");
  for (const ProcessSpec& spec : specs) {
    if (spec.env != specs[0].env || spec.working_dir != specs[0].working_dir) {
      return absl::InvalidArgumentError(absl::StrCat(
          spec.role, ": every rank of an mpirun launch must share one environment and working directory"));
    }
  }
  std::vector<std::string> argv = {options_.mpirun, "--tag-output"};
  if (options_.allow_run_as_root && ::geteuid() == 0) argv.push_back("--allow-run-as-root");
  if (options_.oversubscribe) argv.push_back("--oversubscribe");
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  for (const auto& [key, value] : specs[0].env) argv.insert(argv.end(), {"-x", key});
  bool same = true;
  for (const ProcessSpec& spec : specs) same = same && spec.argv == specs[0].argv;
  if (same) {
    argv.insert(argv.end(), {"-np", absl::StrCat(specs.size())});
    argv.insert(argv.end(), specs[0].argv.begin(), specs[0].argv.end());
    return argv;
  }
  for (size_t r = 0; r < specs.size(); ++r) {
    if (r > 0) argv.push_back(":");
    argv.insert(argv.end(), {"-np", "1"});
    argv.insert(argv.end(), specs[r].argv.begin(), specs[r].argv.end());
  }
  return argv;
}

absl::Status MpiBackend::Launch(GroupId group, const std::vector<ProcessSpec>& specs) {
  absl::StatusOr<std::vector<std::string>> argv = MpirunArgv(specs);
  if (!argv.ok()) return argv.status();
  ProcessSpec launcher;
  launcher.role = absl::StrCat("mpirun-", group);
  launcher.argv = *std::move(argv);
  launcher.env = specs[0].env;
  launcher.working_dir = specs[0].working_dir;
  absl::StatusOr<ProcessId> id = launcher_.Start(launcher);
  if (!id.ok()) return id.status();
  group_of_[*id] = group;
  mpirun_of_[group] = *id;
  LauncherLine(group, absl::StrCat("mpirun: ", absl::StrJoin(launcher.argv, " ")));
  return absl::OkStatus();
}

void MpiBackend::OnLauncherLine(const OutputLine& line) {
  auto it = group_of_.find(line.id);
  if (it == group_of_.end()) return;
  // --tag-output: "[1,3]<stdout>:text" (job id, rank, stream).
  static const std::regex kTag(R"(^\[\d+,(\d+)\]<(stdout|stderr)>:(.*)$)");
  std::smatch m;
  if (std::regex_match(line.text, m, kTag)) {
    RankLine(it->second, std::stoi(m[1].str()), m[2].str() == "stdout" ? Stream::kStdout : Stream::kStderr,
             m[3].str());
  } else if (!line.text.empty()) {
    LauncherLine(it->second, absl::StrCat("mpirun: ", line.text));
  }
}

void MpiBackend::OnLauncherExit(const ProcessExit& exit) {
  auto it = group_of_.find(exit.id);
  if (it == group_of_.end()) return;
  const GroupId group = it->second;
  if (auto timer = kill_timers_.find(group); timer != kill_timers_.end()) {
    loop().Cancel(timer->second);
    kill_timers_.erase(timer);
  }
  LauncherLine(group, absl::StrCat("mpirun exited: ", exit.status.ToString()));
  GroupEnded(group, exit.status);
}

void MpiBackend::StopGroup(GroupId group, absl::Duration grace) {
  auto it = mpirun_of_.find(group);
  if (it == mpirun_of_.end()) return;
  const ProcessId mpirun = it->second;
  absl::StatusOr<ProcessInfo> info = launcher_.Info(mpirun);
  if (!info.ok() || info->state != ProcessState::kRunning || info->pid <= 0) return;
  const pid_t pid = info->pid;
  auto force = [this, group, mpirun, pid] {
    kill_timers_.erase(group);
    absl::StatusOr<ProcessInfo> now = launcher_.Info(mpirun);
    if (!now.ok() || now->state != ProcessState::kRunning) return;
    LauncherLine(group, "grace period over: SIGKILL to mpirun and every process it started here");
    SignalTree(pid, SIGKILL);
  };
  if (grace <= absl::ZeroDuration()) {
    force();
    return;
  }
  // mpirun forwards SIGTERM to every rank and kills those that do not exit.
  ::kill(pid, SIGTERM);
  kill_timers_[group] = loop().RunAfter(grace, force);
}

std::vector<ProcessSpec> MpiJobProcesses(const JobSpec& job, const MpiJobOptions& o) {
  return RankProcesses(job, o, "mpi-rank");
}

}  // namespace orrery::scheduler
