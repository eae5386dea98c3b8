#include "cli/log_relay.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "scheduler/adopted_process.h"
#include "scheduler/backend.h"

extern char** environ;

namespace orrery::cli {
namespace {

constexpr int kRelayOut = 3, kRelayErr = 4;  // the relay's ends of the two pipes

bool IsPipe(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

// Starts the relay on two new pipes and points stdout and stderr at them. Runs once, on the
// watcher thread, after the reader of stderr went away.
void StartRelay(const std::string& file, const std::string& role) {
  std::array<int, 2> out{-1, -1}, err{-1, -1};
  if (::pipe2(out.data(), O_CLOEXEC) != 0) return;
  if (::pipe2(err.data(), O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return;
  }
  // Copies numbered above 4, so that dup2 onto 3 and 4 cannot overwrite one with the other.
  const int out_read = ::fcntl(out[0], F_DUPFD_CLOEXEC, 10), err_read = ::fcntl(err[0], F_DUPFD_CLOEXEC, 10);
  ::close(out[0]);
  ::close(err[0]);
  if (out_read < 0 || err_read < 0) {  // out of descriptors: no relay
    for (int fd : {out_read, err_read, out[1], err[1]}) {
      if (fd >= 0) ::close(fd);
    }
    return;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_read, kRelayOut);
  posix_spawn_file_actions_adddup2(&actions, err_read, kRelayErr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  std::string exe = "/proc/self/exe", cmd = "log-relay", file_flag = "--file", role_flag = "--role";
  std::string file_arg = file, role_arg = role;
  std::vector<char*> argv = {exe.data(), cmd.data(), file_flag.data(), file_arg.data(), role_flag.data(),
                             role_arg.data(), nullptr};
  pid_t pid = -1;
  const int spawned = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_read);
  ::close(err_read);
  if (spawned != 0) {  // no relay: the output is lost, as it was without one
    ::close(out[1]);
    ::close(err[1]);
    return;
  }
  ::dup2(out[1], STDOUT_FILENO);
  ::dup2(err[1], STDERR_FILENO);
  ::close(out[1]);
  ::close(err[1]);
}

std::string& LogFile() {
  static std::string* file = new std::string;
  return *file;
}

}  // namespace

void RelayOutputIfItsReaderDies() {
  const char* file_env = std::getenv("ORRERY_LOG_FILE");
  const char* role_env = std::getenv("ORRERY_LOG_ROLE");
  std::string file = file_env != nullptr ? file_env : "", role = role_env != nullptr ? role_env : "";
  LogFile() = file;
  // Not passed on: a process this one starts has output of its own.
  ::unsetenv("ORRERY_LOG_FILE");
  ::unsetenv("ORRERY_LOG_ROLE");
  if (file.empty() || role.empty() || !IsPipe(STDERR_FILENO)) return;
  std::thread([file = std::move(file), role = std::move(role)] {
    // The write end of a pipe polls POLLERR once its last reader has closed it.
    struct pollfd p = {STDERR_FILENO, 0, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    if ((p.revents & POLLERR) != 0) StartRelay(file, role);
  }).detach();
}

void RecordExitCode(int code) {
  if (!LogFile().empty()) scheduler::RecordExitCode(LogFile(), ::getpid(), code);
}

int RunLogRelay(const std::string& file, const std::string& role) {
  ::setsid();  // out of the process's group: a signal to the group must not cut the last lines
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  const int log = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return 1;
  scheduler::AppendLogRecord(log, absl::Now(), role, "sys",
                             absl::StrCat("its output reader (the scheduler) went away; ",
                                          "its output goes on here, through orrery log-relay pid ", ::getpid()));
  std::array<struct pollfd, 2> fds = {{{kRelayOut, POLLIN, 0}, {kRelayErr, POLLIN, 0}}};
  std::array<scheduler::LineSplitter, 2> lines;
  const std::array<const char*, 2> tags = {"out", "err"};
  int open = 2;
  std::vector<char> buf(65536);
  while (open > 0) {
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      auto emit = [&](std::string text) {
        scheduler::AppendLogRecord(log, absl::Now(), role, tags[i], text);
      };
      const ssize_t n = ::read(fds[i].fd, buf.data(), buf.size());
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {  // EOF: every writer has closed it
        lines[i].Finish(emit);
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
        continue;
      }
      lines[i].Append(absl::string_view(buf.data(), static_cast<size_t>(n)),
                      scheduler::kMaxOutputLineBytes, emit);  // split as the daemon splits
    }
  }
  ::close(log);
  return 0;
}

}  // namespace orrery::cli
