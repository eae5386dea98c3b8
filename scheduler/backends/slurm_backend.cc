#include "scheduler/backends/slurm_backend.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "scheduler/backends/job_ranks.h"

extern char** environ;

namespace orrery::scheduler {
namespace {

namespace fs = std::filesystem;

// Single-quoted for bash.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string QuoteAll(const std::vector<std::string>& args) {
  std::vector<std::string> quoted;
  for (const std::string& a : args) quoted.push_back(Quote(a));
  return absl::StrJoin(quoted, " ");
}

bool Terminal(const std::string& state) {
  for (const char* s : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                        "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}) {
    if (absl::StartsWith(state, s)) return true;
  }
  return false;
}

// "ExitCode=a:b" → exit code a, or signal b when b > 0.
std::optional<ExitStatus> ParseExitCode(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  int code = 0, sig = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &code) || !absl::SimpleAtoi(parts[1], &sig)) return std::nullopt;
  return sig > 0 ? ExitStatus{-1, sig} : ExitStatus{code, 0};
}

// Runs a command to completion, synchronously, for at most `timeout` (used only in the
// destructor, where the event loop can no longer run).
void RunNow(const std::vector<std::string>& argv, const std::map<std::string, std::string>& extra_env,
            absl::Duration timeout) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    if (extra_env.count(kv.substr(0, kv.find('='))) == 0) env_strings.push_back(kv);
  }
  for (const auto& [k, v] : extra_env) env_strings.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> envp, args;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> copy = argv;
  for (std::string& a : copy) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = 0;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return;
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (absl::Now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

}  // namespace

struct SlurmBackend::TailFile {
  std::string path;
  int rank = -1;  // -1: the batch script's own output
  Stream stream = Stream::kStdout;
  uint64_t offset = 0;
  LineSplitter lines;  // lines are not split, however long
};

struct SlurmBackend::Submission {
  GroupId group = 0;
  JobState job;
  std::vector<TailFile> files;
  TimerId poll_timer = 0;
  TimerId kill_timer = 0;
  absl::Time next_query = absl::InfinitePast();
  bool query_in_flight = false;
  bool stop_requested = false;
  bool kill_requested = false;
  bool concluding = false;
};

SlurmBackend::SlurmBackend(EventLoop& loop, Options options)
    : GroupBackend(loop, options.group), options_(std::move(options)), commands_(loop, options_.commands) {}

SlurmBackend::~SlurmBackend() {
  liveness_.Close();
  std::vector<std::string> running;
  for (auto& [gid, launch] : launches_) {
    if (launch->poll_timer) loop().Cancel(launch->poll_timer);
    if (launch->kill_timer) loop().Cancel(launch->kill_timer);
    if (!launch->concluding && !launch->job.job_id.empty()) running.push_back(launch->job.job_id);
  }
  if (options_.cancel_on_destroy && !running.empty()) {
    std::vector<std::string> argv = {Tool("scancel")};
    argv.insert(argv.end(), running.begin(), running.end());
    RunNow(argv, options_.env, absl::Seconds(10));
  }
}

std::string SlurmBackend::Tool(const std::string& name) const {
  return options_.bin_dir.empty() ? name : (fs::path(options_.bin_dir) / name).string();
}

std::map<std::string, std::string> SlurmBackend::ToolEnv() const { return options_.env; }

absl::StatusOr<SlurmBackend::JobState> SlurmBackend::SlurmJob(ProcessId id) const {
  absl::StatusOr<ProcessInfo> info = Info(id);
  if (!info.ok()) return info.status();
  for (const auto& [gid, launch] : launches_) {
    for (const std::string& role : GroupRoles(gid)) {
      if (role == info->role) return launch->job;
    }
  }
  return absl::NotFoundError(absl::StrCat("no slurm job for process ", id));
}

absl::StatusOr<std::string> SlurmBackend::BatchScript(const std::vector<ProcessSpec>& specs,
                                                      const std::string& dir) const {
  if (specs.empty()) return absl::InvalidArgumentError("slurm: no tasks");
  bool same = true;
  for (const ProcessSpec& spec : specs) {
    if (spec.env != specs[0].env || spec.working_dir != specs[0].working_dir) {
      return absl::InvalidArgumentError(absl::StrCat(
          spec.role, ": every task of a Slurm launch must share one environment and working directory"));
    }
    same = same && spec.argv == specs[0].argv;
  }
  const std::string n = absl::StrCat(specs.size());
  std::string script = absl::StrCat(
      "#!/bin/bash\n",
      "# Written by orrery: ", n, " task(s) in one srun step. The environment (the job token\n",
      "# included) comes from sbatch, which exports its own to the job.\n",
      "export ORRERY_RENDEZVOUS=", Quote(dir + "/rendezvous"), "\n");
  std::vector<std::string> srun = {"srun", "--ntasks=" + n, "--kill-on-bad-exit=1",
                                   "--output=" + dir + "/task-%t.out", "--error=" + dir + "/task-%t.err"};
  srun.insert(srun.end(), options_.srun_args.begin(), options_.srun_args.end());
  if (same) {
    absl::StrAppend(&script, QuoteAll(srun), " ", QuoteAll(specs[0].argv), "\n");
  } else {
    // srun --multi-prog: one line per task, "RANK PROGRAM ARGS...", split on white space.
    std::string conf;
    for (size_t r = 0; r < specs.size(); ++r) {
      for (const std::string& a : specs[r].argv) {
        if (a.empty() || a.find_first_of(" \t\n'\"\\%") != std::string::npos) {
          return absl::InvalidArgumentError(absl::StrCat(specs[r].role, ": argument '", a,
                                                         "' cannot be passed through srun --multi-prog"));
        }
      }
      absl::StrAppend(&conf, r, " ", absl::StrJoin(specs[r].argv, " "), "\n");
    }
    absl::StrAppend(&script, "cat > ", Quote(dir + "/tasks.conf"), " <<'ORRERY_TASKS'\n", conf, "ORRERY_TASKS\n",
                    QuoteAll(srun), " --multi-prog ", Quote(dir + "/tasks.conf"), "\n");
  }
  absl::StrAppend(&script, "code=$?\n", "echo \"$code\" > ", Quote(dir + "/exit.tmp"), " && mv ",
                  Quote(dir + "/exit.tmp"), " ", Quote(dir + "/exit"), "\n", "exit \"$code\"\n");
  return script;
}

absl::Status SlurmBackend::Launch(GroupId group, const std::vector<ProcessSpec>& specs) {
  if (options_.work_dir.empty()) return absl::FailedPreconditionError("slurm backend: no work_dir configured");
  std::error_code ec;
  fs::create_directories(options_.work_dir, ec);
  std::string name = "orrery";
  if (auto it = specs[0].env.find("ORRERY_JOB_NAME"); it != specs[0].env.end()) name = "orrery-" + it->second;
  std::string pattern = (fs::path(options_.work_dir) / (name + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::UnavailableError(absl::StrCat("slurm backend: cannot create a directory in ", options_.work_dir,
                                               ": ", strerror(errno)));
  }
  const std::string dir = fs::absolute(pattern).string();
  absl::StatusOr<std::string> script = BatchScript(specs, dir);
  if (!script.ok()) {
    fs::remove_all(dir, ec);
    return script.status();
  }
  fs::create_directories(fs::path(dir) / "rendezvous", ec);
  ::chmod((fs::path(dir) / "rendezvous").c_str(), 0700);
  const std::string script_path = (fs::path(dir) / "batch.sh").string();
  {
    std::ofstream out(script_path, std::ios::trunc);
    out << *script;
    if (!out) return absl::UnavailableError(absl::StrCat("slurm backend: cannot write ", script_path));
  }
  ::chmod(script_path.c_str(), 0755);

  auto launch = std::make_unique<Submission>();
  launch->group = group;
  launch->job.dir = dir;
  launch->job.state = "SUBMITTING";
  launch->files.push_back(TailFile{dir + "/batch.out", -1, Stream::kStdout, 0, {}});
  for (size_t r = 0; r < specs.size(); ++r) {
    launch->files.push_back(TailFile{absl::StrCat(dir, "/task-", r, ".out"), static_cast<int>(r), Stream::kStdout, 0, {}});
    launch->files.push_back(TailFile{absl::StrCat(dir, "/task-", r, ".err"), static_cast<int>(r), Stream::kStderr, 0, {}});
  }
  std::vector<std::string> argv = {Tool("sbatch"), "--parsable", "--job-name=" + name,
                                   absl::StrCat("--ntasks=", specs.size()), "--output=" + dir + "/batch.out",
                                   "--error=" + dir + "/batch.out",
                                   "--chdir=" + (specs[0].working_dir.empty() ? dir : specs[0].working_dir)};
  argv.insert(argv.end(), options_.sbatch_args.begin(), options_.sbatch_args.end());
  argv.push_back(script_path);
  std::map<std::string, std::string> env = ToolEnv();
  for (const auto& [k, v] : specs[0].env) env[k] = v;
  launches_.emplace(group, std::move(launch));
  LauncherLine(group, absl::StrCat("slurm: ", absl::StrJoin(argv, " ")));

  commands_.Run(argv, env, options_.command_timeout,
                liveness_.Guard([this, group](CommandResult result) { Submitted(group, std::move(result)); }));
  launches_[group]->poll_timer = loop().RunEvery(options_.poll_interval, liveness_.Guard([this, group] { Poll(group); }));
  return absl::OkStatus();
}

void SlurmBackend::Submitted(GroupId group, CommandResult result) {
  auto it = launches_.find(group);
  if (it == launches_.end()) return;
  Submission& launch = *it->second;
  std::string id = result.out.empty() ? "" : std::string(absl::StripAsciiWhitespace(result.out[0]));
  id = id.substr(0, id.find(';'));  // "123;cluster"
  if (!result.ok() || id.empty()) {
    Conclude(group, result.run.ok() && !result.exit.ok() ? result.exit : ExitStatus{1, 0}, "REFUSED",
             result.Describe("sbatch refused the job"));
    return;
  }
  launch.job.job_id = id;
  launch.job.state = "PENDING";
  LauncherLine(group, absl::StrCat("submitted as slurm job ", id, " (", launch.job.dir, ")"));
  if (launch.stop_requested) Cancel(group, launch.kill_requested);
}

void SlurmBackend::Poll(GroupId group) {
  auto it = launches_.find(group);
  if (it == launches_.end() || it->second->concluding) return;
  ReadOutput(group, /*final=*/false);
  Submission& launch = *it->second;
  if (!launch.job.job_id.empty() && !launch.query_in_flight && absl::Now() >= launch.next_query) {
    QueryQueue(group);
  }
}

void SlurmBackend::QueryQueue(GroupId group) {
  Submission& launch = *launches_[group];
  launch.query_in_flight = true;
  launch.next_query = absl::Now() + options_.squeue_interval;
  commands_.Run({Tool("squeue"), "--noheader", "--jobs=" + launch.job.job_id, "--format=%T|%r"}, ToolEnv(),
                options_.command_timeout, liveness_.Guard([this, group](CommandResult result) {
                  auto it = launches_.find(group);
                  if (it == launches_.end() || it->second->concluding) return;
                  Submission& launch = *it->second;
                  launch.query_in_flight = false;
                  const bool gone = (result.ok() && result.out.empty()) ||
                                    (result.run.ok() && !result.exit.ok() &&
                                     absl::StrContains(absl::StrJoin(result.err, " "), "Invalid job id"));
                  if (gone) {
                    Finished(group);
                    return;
                  }
                  if (!result.ok()) {
                    LauncherLine(group, result.Describe("squeue"));
                    return;  // the controller may be busy: ask again later
                  }
                  std::vector<std::string> parts = absl::StrSplit(result.out[0], absl::MaxSplits('|', 1));
                  const std::string state = parts[0];
                  const std::string reason = parts.size() > 1 ? parts[1] : "";
                  if (state != launch.job.state || reason != launch.job.reason) {
                    LauncherLine(group, absl::StrCat("slurm job ", launch.job.job_id, ": ", state,
                                                     reason.empty() || reason == "None" ? "" : " (" + reason + ")"));
                  }
                  launch.job.state = state;
                  launch.job.reason = reason;
                  if (Terminal(state)) Finished(group);
                }));
}

void SlurmBackend::Finished(GroupId group) {
  Submission& launch = *launches_[group];
  if (launch.concluding) return;
  launch.concluding = true;
  commands_.Run({Tool("scontrol"), "--oneliner", "show", "job", launch.job.job_id}, ToolEnv(),
                options_.command_timeout, liveness_.Guard([this, group](CommandResult result) {
                  std::optional<ExitStatus> status;
                  std::string state;
                  if (result.ok() && !result.out.empty()) {
                    for (absl::string_view field : absl::StrSplit(result.out[0], ' ')) {
                      if (absl::ConsumePrefix(&field, "JobState=")) state = std::string(field);
                      if (absl::ConsumePrefix(&field, "ExitCode=")) status = ParseExitCode(std::string(field));
                    }
                    Conclude(group, status, state);
                    return;
                  }
                  // Purged from the controller: ask the accounting database, where there is one.
                  const std::string id = launches_[group]->job.job_id;
                  commands_.Run({Tool("sacct"), "--noheader", "--allocations", "--parsable2", "--jobs=" + id,
                                 "--format=State,ExitCode"},
                                ToolEnv(), options_.command_timeout, liveness_.Guard([this, group](CommandResult result) {
                                  std::optional<ExitStatus> status;
                                  std::string state;
                                  if (result.ok() && !result.out.empty()) {
                                    std::vector<std::string> parts = absl::StrSplit(result.out[0], '|');
                                    state = parts[0];
                                    if (parts.size() > 1) status = ParseExitCode(parts[1]);
                                  }
                                  Conclude(group, status, state);
                                }));
                }));
}

void SlurmBackend::Conclude(GroupId group, std::optional<ExitStatus> status, const std::string& final_state,
                            const std::string& error) {
  auto it = launches_.find(group);
  if (it == launches_.end()) return;
  Submission& launch = *it->second;
  launch.concluding = true;
  if (launch.poll_timer) loop().Cancel(launch.poll_timer);
  if (launch.kill_timer) loop().Cancel(launch.kill_timer);
  launch.poll_timer = launch.kill_timer = 0;
  if (!final_state.empty()) launch.job.state = final_state;
  ReadOutput(group, /*final=*/true);
  // The batch script records srun's exit code; it is missing when the job was cancelled or
  // failed before srun ended, and then Slurm's ExitCode stands.
  if (error.empty()) {
    std::ifstream in(launch.job.dir + "/exit");
    int code = 0;
    if (in >> code) status = ExitStatus{code, 0};
    LauncherLine(group, absl::StrCat("slurm job ", launch.job.job_id, " ended: ",
                                     launch.job.state.empty() ? "state unknown" : launch.job.state, ", ",
                                     status ? status->ToString() : "exit status unknown"));
  }
  GroupEnded(group, status.value_or(ExitStatus{}), error);
}

void SlurmBackend::ReadOutput(GroupId group, bool final) {
  Submission& launch = *launches_[group];
  for (TailFile& file : launch.files) {
    std::ifstream in(file.path, std::ios::binary);
    if (!in) continue;
    in.seekg(static_cast<std::streamoff>(file.offset));
    std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    file.offset += chunk.size();
    std::vector<std::string> lines;
    auto collect = [&lines](std::string line) { lines.push_back(std::move(line)); };
    file.lines.Append(chunk, std::string::npos, collect);
    if (final) file.lines.Finish(collect);
    for (std::string& line : lines) {
      if (file.rank < 0) {
        LauncherLine(group, absl::StrCat("batch: ", line));
      } else {
        RankLine(group, file.rank, file.stream, std::move(line));
      }
    }
  }
}

void SlurmBackend::Cancel(GroupId group, bool kill) {
  Submission& launch = *launches_[group];
  std::vector<std::string> argv = {Tool("scancel")};
  if (kill) argv.insert(argv.end(), {"--signal=KILL", "--full"});
  argv.push_back(launch.job.job_id);
  LauncherLine(group, absl::StrJoin(argv, " "));
  commands_.Run(argv, ToolEnv(), options_.command_timeout, liveness_.Guard([this, group](CommandResult result) {
    if (!result.ok()) LauncherLine(group, result.Describe("scancel"));
  }));
}

void SlurmBackend::StopGroup(GroupId group, absl::Duration grace) {
  auto it = launches_.find(group);
  if (it == launches_.end() || it->second->concluding) return;
  Submission& launch = *it->second;
  const bool kill = grace <= absl::ZeroDuration();
  launch.stop_requested = true;
  launch.kill_requested = launch.kill_requested || kill;
  if (launch.job.job_id.empty()) return;  // sbatch has not answered; Submitted cancels
  Cancel(group, kill);
  if (!kill && launch.kill_timer == 0) {
    launch.kill_timer = loop().RunAfter(grace, liveness_.Guard([this, group] {
      auto it = launches_.find(group);
      if (it == launches_.end() || it->second->concluding) return;
      it->second->kill_timer = 0;
      it->second->kill_requested = true;
      Cancel(group, /*kill=*/true);
    }));
  }
}

std::vector<ProcessSpec> SlurmJobProcesses(const JobSpec& job, const SlurmJobOptions& o) {
  std::vector<ProcessSpec> specs = RankProcesses(job, o, "slurm-rank");
  for (ProcessSpec& spec : specs) spec.env["ORRERY_JOB_NAME"] = job.name;
  return specs;
}

}  // namespace orrery::scheduler
