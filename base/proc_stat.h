// /proc/PID/stat, read once and split: the one parser for the scheduler (process start times,
// parent pids) and the benchmarks (CPU time); and one /proc/meminfo field.
#pragma once

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
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

// A /proc/meminfo field in bytes ("MemTotal", or "MemAvailable": the kernel's estimate of what
// can be allocated without swapping), or -1 when it cannot be read.
inline int64_t MemInfoBytes(absl::string_view field) {
  const std::string key = absl::StrCat(field, ":");
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    int64_t kb = 0;
    if (f.size() >= 2 && f[0] == key && absl::SimpleAtoi(f[1], &kb)) return kb * 1024;
  }
  return -1;
}

}  // namespace orrery
