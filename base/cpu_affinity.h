// Binding a process to CPU cores, as `mpirun --bind-to core` or `taskset` would: for
// `orrery server --cpus` and `orrery learner --cpus`. A shard and a learner that talk over
// loopback each keep their caches and stop trading places on the cores; on a 2-core machine that
// moves a 4 MB pull+push round trip by up to a fifth (bench/transport).
#pragma once

#include <dirent.h>
#include <sched.h>

#include <cerrno>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace orrery {

// A cpu list as taskset -c and /sys/devices/system/cpu/online write it: "3", "0-3", "0,2,4-7".
// Returns the cpus in ascending order, each once; INVALID_ARGUMENT naming the bad item for an
// empty list, a non-number, a reversed range or a cpu at or past CPU_SETSIZE.
inline absl::StatusOr<std::vector<int>> ParseCpuList(absl::string_view text) {
  std::set<int> cpus;
  const auto bad = [&](absl::string_view item, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("cpu list '", text, "': '", item, "' ", why,
                                                   " (expected cpus like 0,2,4-7)"));
  };
  if (text.empty()) return absl::InvalidArgumentError("cpu list is empty (expected cpus like 0,2,4-7)");
  // Digits only (SimpleAtoi alone would take " 3" and "+3").
  const auto number = [](absl::string_view digits, int* out) {
    return !digits.empty() && digits.size() <= 9 &&
           digits.find_first_not_of("0123456789") == absl::string_view::npos &&
           absl::SimpleAtoi(digits, out);
  };
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    std::vector<absl::string_view> ends = absl::StrSplit(item, absl::MaxSplits('-', 1));
    int first = 0, last = 0;
    if (!number(ends[0], &first) || (ends.size() == 2 && !number(ends[1], &last))) {
      return bad(item, "is not a cpu number or range");
    }
    if (ends.size() == 1) last = first;
    if (last < first) return bad(item, "is a range that runs backwards");
    if (last >= CPU_SETSIZE) return bad(item, absl::StrCat("names a cpu past ", CPU_SETSIZE - 1));
    for (int c = first; c <= last; ++c) cpus.insert(c);
  }
  return std::vector<int>(cpus.begin(), cpus.end());
}

// "0-3,6": ascending cpus written back as a list, runs as ranges.
inline std::string FormatCpuList(const std::vector<int>& cpus) {
  std::vector<std::string> items;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    items.push_back(j == i ? absl::StrCat(cpus[i]) : absl::StrCat(cpus[i], "-", cpus[j]));
    i = j + 1;
  }
  return absl::StrJoin(items, ",");
}

// The cpus the calling thread may run on (its affinity mask), ascending.
inline absl::StatusOr<std::vector<int>> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) {
    return absl::InternalError(absl::StrCat("sched_getaffinity: errno ", errno));
  }
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

// How many cpus the calling thread may run on; 1 when the mask cannot be read. For deciding
// whether a second thread can run beside this one (a process bound to one core gains nothing).
inline int AllowedCpuCount() {
  absl::StatusOr<std::vector<int>> cpus = AllowedCpus();
  return cpus.ok() ? static_cast<int>(cpus->size()) : 1;
}

// Sets the affinity mask of every thread of this process to `cpus` (valid cpu numbers), unchecked
// against the current mask: how a process bound by BindProcessToCpus widens again (the kernel
// still refuses cpus outside its cgroup). Threads started afterwards inherit it.
inline absl::Status SetProcessAffinity(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) {
    if (c < 0 || c >= CPU_SETSIZE) return absl::InvalidArgumentError(absl::StrCat("no cpu ", c));
    CPU_SET(c, &set);
  }
  // The mask is per thread: set it on every thread there is (gRPC or glog may have started some).
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) {
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
      return absl::InternalError(absl::StrCat("sched_setaffinity: errno ", errno));
    }
    return absl::OkStatus();
  }
  absl::Status status = absl::OkStatus();
  while (dirent* e = readdir(tasks)) {
    int tid = 0;
    if (!absl::SimpleAtoi(e->d_name, &tid)) continue;
    // A thread may have exited since the listing (ESRCH): nothing to bind.
    if (sched_setaffinity(tid, sizeof(set), &set) != 0 && errno != ESRCH && status.ok()) {
      status = absl::InternalError(absl::StrCat("sched_setaffinity of thread ", tid, ": errno ", errno));
    }
  }
  closedir(tasks);
  return status;
}

// Binds every thread of this process, and so every thread it starts later, to `cpus`. Each cpu
// must be one the process may run on now (FAILED_PRECONDITION naming it and the allowed ones:
// a cgroup, taskset or the launcher may have narrowed them). Call it early, before thread pools
// size themselves from the cores they see.
inline absl::Status BindProcessToCpus(const std::vector<int>& cpus) {
  if (cpus.empty()) return absl::InvalidArgumentError("no cpus to bind to");
  absl::StatusOr<std::vector<int>> allowed = AllowedCpus();
  if (!allowed.ok()) return allowed.status();
  const std::set<int> may(allowed->begin(), allowed->end());
  for (int c : cpus) {
    if (!may.count(c)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cpu ", c, " is not available to this process (it may use ", FormatCpuList(*allowed), ")"));
    }
  }
  return SetProcessAffinity(cpus);
}

}  // namespace orrery
