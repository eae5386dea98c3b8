#include "scheduler/backends/command_runner.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace orrery::scheduler {

std::string CommandResult::Describe(const std::string& what) const {
  if (!run.ok()) return absl::StrCat(what, ": ", run.message());
  std::string text = absl::StrCat(what, ": ", exit.ToString());
  const std::vector<std::string>& lines = err.empty() ? out : err;
  if (!lines.empty()) absl::StrAppend(&text, ": ", absl::StrJoin(lines, " / "));
  return text;
}

struct CommandRunner::Command {
  std::unique_ptr<LocalBackend> backend;
  ProcessId process = 0;
  TimerId timer = 0;
  bool timed_out = false;
  size_t max_lines = 0;
  CommandResult result;
  std::function<void(CommandResult)> done;
};

CommandRunner::CommandRunner(EventLoop& loop, LocalBackend::Options options)
    : loop_(loop), options_(std::move(options)) {}

CommandRunner::~CommandRunner() {
  liveness_.Close();
  for (auto& [id, command] : commands_) {
    if (command->timer) loop_.Cancel(command->timer);
  }
  commands_.clear();  // each LocalBackend kills and reaps its child
  finished_.clear();
}

void CommandRunner::Run(std::vector<std::string> argv, std::map<std::string, std::string> env,
                        absl::Duration timeout, std::function<void(CommandResult)> done, size_t max_lines) {
  const int64_t id = next_++;
  auto command = std::make_unique<Command>();
  command->backend = std::make_unique<LocalBackend>(loop_, options_);
  command->max_lines = max_lines;
  command->done = std::move(done);
  Command* c = command.get();
  c->backend->AddLineListener([c](const OutputLine& line) {
    std::vector<std::string>& lines = line.stream == Stream::kStdout ? c->result.out : c->result.err;
    if (lines.size() < c->max_lines) lines.push_back(line.text);
  });
  c->backend->AddExitListener(liveness_.Guard([this, id, c](const ProcessExit& exit) {
    Finish(id, c->timed_out ? absl::DeadlineExceededError("timed out") : absl::OkStatus(), exit.status);
  }));
  ProcessSpec spec;
  spec.role = "command";
  spec.argv = std::move(argv);
  spec.env = std::move(env);
  absl::StatusOr<ProcessId> pid = c->backend->Start(spec);
  commands_.emplace(id, std::move(command));
  if (!pid.ok()) {
    // Reported from the loop, never inside Run.
    absl::Status error = absl::UnavailableError(pid.status().message());
    loop_.Post(liveness_.Guard([this, id, error] { Finish(id, error, ExitStatus{}); }));
    return;
  }
  c->process = *pid;
  c->timer = loop_.RunAfter(timeout, liveness_.Guard([this, id] {
    auto it = commands_.find(id);
    if (it == commands_.end()) return;
    it->second->timer = 0;
    it->second->timed_out = true;
    it->second->backend->Stop(it->second->process, absl::ZeroDuration()).IgnoreError();
  }));
}

void CommandRunner::Finish(int64_t id, absl::Status run, ExitStatus exit) {
  auto it = commands_.find(id);
  if (it == commands_.end()) return;
  std::unique_ptr<Command> command = std::move(it->second);
  commands_.erase(it);
  if (command->timer) loop_.Cancel(command->timer);
  command->result.run = std::move(run);
  command->result.exit = exit;
  std::function<void(CommandResult)> done = std::move(command->done);
  CommandResult result = std::move(command->result);
  // The backend is inside its own exit callback: free it later, from the loop.
  finished_.push_back(std::move(command->backend));
  loop_.Post(liveness_.Guard([this] { finished_.clear(); }));
  if (done) done(std::move(result));
}

}  // namespace orrery::scheduler
