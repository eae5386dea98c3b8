// /proc/PID/stat, read once and split: the one parser for the scheduler (process start times,
// parent pids) and the benchmarks (CPU time).
#pragma once

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace orrery {

// The fields of /proc/PID/stat after the command name: element 0 is field 3 (state), element
// k is field k + 3 (so ppid is [1], utime [11], stime [12], starttime [19]). The command name
// (field 2) may hold spaces and parentheses, so the split starts after the last ')'. pid 0 is
// this process. Empty when the process is gone or the file is malformed.
inline std::vector<std::string> ProcStatFields(int pid = 0) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/stat") : absl::StrCat("/proc/", pid, "/stat"));
  const std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return {};
  return absl::StrSplit(stat.substr(close + 1), absl::ByAnyChar(" \n"), absl::SkipEmpty());
}

}  // namespace orrery
