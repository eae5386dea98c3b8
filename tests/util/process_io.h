// Helpers for tests that drive real processes: starting one with an output stream piped back,
// reading a child's output line with a deadline, and running a command line to completion with
// both streams captured.
#pragma once

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace orrery::testing {

// The Cpus_allowed_list ("1", "0-3") of the /proc status file at `status_path`
// (/proc/PID/status, /proc/PID/task/TID/status); "" when it has none or cannot be read.
inline std::string CpusAllowedList(const std::filesystem::path& status_path) {
  std::ifstream in(status_path);
  const std::string key = "Cpus_allowed_list:";
  for (std::string line; std::getline(in, line);) {
    if (line.compare(0, key.size(), key) != 0) continue;
    const size_t value = line.find_first_not_of(" \t", key.size());
    return value == std::string::npos ? "" : line.substr(value);
  }
  return "";
}

// Reads from `fd` until a newline, EOF or the deadline; returns the line without its newline.
inline std::string ReadLine(int fd, absl::Duration limit) {
  std::string line;
  const absl::Time end = absl::Now() + limit;
  while (absl::Now() < end) {
    pollfd p{fd, POLLIN, 0};
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(end - absl::Now()));
    if (poll(&p, 1, std::max(ms, 1)) <= 0) continue;
    char c;
    if (read(fd, &c, 1) != 1) break;
    if (c == '\n') return line;
    line.push_back(c);
  }
  return line;
}

// A child process whose `stream` (stdout or stderr) comes to this process through `fd`, the read
// end of a pipe that the caller closes. pid -1 (and fd -1) when the pipe or the fork failed.
struct PipedChild {
  pid_t pid = -1;
  int fd = -1;
};

// Starts argv[0] with `argv` (no shell), its `stream` (STDOUT_FILENO or STDERR_FILENO) piped back.
inline PipedChild SpawnPiped(const std::vector<std::string>& argv, int stream = STDOUT_FILENO) {
  std::vector<char*> args;  // built before the fork: the child only dups and execs
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], stream);
    close(fds[0]);
    close(fds[1]);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  if (pid < 0) {
    close(fds[0]);
    return {};
  }
  return {pid, fds[0]};
}

struct CommandResult {
  int exit_code = -1;  // -1: did not start, or ended by a signal
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs `command` through the shell with stdin from /dev/null; stderr goes through `err_path`
// (removed afterwards).
inline CommandResult RunCommand(const std::string& command, const std::filesystem::path& err_path) {
  CommandResult r;
  FILE* p = popen(absl::StrCat(command, " 2>", err_path.string(), " </dev/null").c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  {
    std::ifstream in(err_path);
    r.err.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::filesystem::remove(err_path);
  return r;
}

}  // namespace orrery::testing
