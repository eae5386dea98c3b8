#include "scheduler/backends/process_tree.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "base/proc_stat.h"

namespace orrery::scheduler {
namespace {

// The parent pid from /proc/PID/stat (field 4); -1 when unreadable.
pid_t ParentOf(pid_t pid) {
  const std::vector<std::string> fields = ProcStatFields(pid);
  pid_t ppid = -1;
  if (fields.size() < 2 || !absl::SimpleAtoi(fields[1], &ppid)) return -1;
  return ppid;
}

}  // namespace

std::vector<pid_t> Descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  if (DIR* dir = ::opendir("/proc")) {
    while (dirent* e = ::readdir(dir)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0' || pid <= 0) continue;
      const pid_t parent = ParentOf(static_cast<pid_t>(pid));
      if (parent > 0) children.emplace(parent, static_cast<pid_t>(pid));
    }
    ::closedir(dir);
  }
  std::vector<pid_t> out;
  std::deque<pid_t> queue = {root};
  while (!queue.empty()) {
    const pid_t p = queue.front();
    queue.pop_front();
    auto [begin, end] = children.equal_range(p);
    for (auto it = begin; it != end; ++it) {
      out.push_back(it->second);
      queue.push_back(it->second);
    }
  }
  return out;
}

void SignalTree(pid_t root, int signal) {
  const pid_t own_group = ::getpgrp();
  for (pid_t pid : Descendants(root)) {
    const pid_t group = ::getpgid(pid);
    if (group > 0 && group != own_group) ::kill(-group, signal);
    ::kill(pid, signal);
  }
  ::kill(root, signal);
}

}  // namespace orrery::scheduler
