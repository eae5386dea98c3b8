// How many cores this process can keep busy: its affinity mask (taskset, mpirun --bind-to core,
// `orrery ... --cpus`) capped by the CPU bandwidth its cgroup grants (a Kubernetes CPU limit, a
// Slurm or systemd CPUQuota, `docker --cpus`). A quota does not narrow the affinity mask: a pod
// limited to 2 CPUs on a 64-core node still sees 64 cores, and sizing thread pools from them
// would have the kernel throttle the process for most of every period. What `--threads 0`, the
// number of compute threads `orrery run` gives each learner, the scheduler daemon's default slots
// and a shard's second update thread are sized from.
//
// Cgroup v1 (the cpu controller's cpu.cfs_quota_us / cpu.cfs_period_us) and v2 (cpu.max) are
// both read, each at the process's own cgroup and at every ancestor up to the hierarchy's mount,
// the smallest quota winning (a parent's limit binds its children). Where the files cannot be
// read or parsed there is no limit: the affinity mask alone decides, as before.
#pragma once

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "base/cpu_affinity.h"

namespace orrery {

// A cgroup hierarchy as /proc/self/mountinfo lists it: the cgroup its mount shows at
// `mount_point` (`root`, "/" unless the mount is of a sub-tree, as in a container), and whether it
// is the unified (v2) hierarchy or a v1 one with the cpu controller.
struct CgroupMount {
  std::string root;
  std::string mount_point;
  bool v2 = false;
};

namespace cgroup_internal {

// mountinfo writes space, tab, newline and backslash in paths as \040, \011, \012 and \134.
inline std::string UnescapeMountPath(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' &&
        s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

inline bool HasItem(absl::string_view comma_list, absl::string_view item) {
  for (absl::string_view x : absl::StrSplit(comma_list, ',')) {
    if (x == item) return true;
  }
  return false;
}

inline std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

}  // namespace cgroup_internal

// The v1 hierarchies that carry the cpu controller, and the v2 hierarchy, from the text of
// /proc/self/mountinfo ("36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu").
// Lines that are not cgroup mounts, or not well formed, are skipped.
inline std::vector<CgroupMount> CpuCgroupMounts(absl::string_view mountinfo) {
  std::vector<CgroupMount> mounts;
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n', absl::SkipEmpty())) {
    const std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // id parent major:minor root mount-point options [optional fields...] - type source super-options
    const auto dash = std::find(f.begin(), f.end(), absl::string_view("-"));
    if (f.size() < 5 || dash - f.begin() < 6 || f.end() - dash < 3) continue;
    const absl::string_view type = dash[1];
    const absl::string_view super_options = f.end() - dash >= 4 ? dash[3] : absl::string_view();
    CgroupMount m{cgroup_internal::UnescapeMountPath(f[3]), cgroup_internal::UnescapeMountPath(f[4]), type == "cgroup2"};
    if (m.v2 || (type == "cgroup" && cgroup_internal::HasItem(super_options, "cpu"))) mounts.push_back(std::move(m));
  }
  return mounts;
}

// This process's cgroup from the text of /proc/self/cgroup: the v1 line whose controllers include
// cpu ("4:cpu,cpuacct:/a/b"), or the v2 line ("0::/a/b"). nullopt when there is no such line.
inline std::optional<std::string> CgroupPathOf(absl::string_view proc_self_cgroup, bool v2) {
  for (absl::string_view line : absl::StrSplit(proc_self_cgroup, '\n', absl::SkipEmpty())) {
    const std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3 || !absl::StartsWith(f[2], "/")) continue;
    if (v2 ? (f[0] == "0" && f[1].empty()) : cgroup_internal::HasItem(f[1], "cpu")) return std::string(f[2]);
  }
  return std::nullopt;
}

// Where the cgroup `path` (CgroupPathOf) is under the mount `m`: its mount point, then the path
// below the mount's root. A cgroup outside the mounted sub-tree (a container that sees only its
// own) is read at the mount point itself.
inline std::string CgroupDirectory(const CgroupMount& m, absl::string_view path) {
  const std::string mount_root = m.root == "/" ? "" : m.root;
  if (path == m.root || !absl::StartsWith(path, mount_root + "/") || path == "/") return m.mount_point;
  return absl::StrCat(m.mount_point, path.substr(mount_root.size()));
}

// The cores a quota grants, quota / period: v2's cpu.max ("max 100000": no limit, nullopt;
// "150000 100000": 1.5) and v1's cpu.cfs_quota_us (-1: no limit) over cpu.cfs_period_us.
// INVALID_ARGUMENT for text that is neither.
inline absl::StatusOr<std::optional<double>> ParseCpuMax(absl::string_view text) {
  const std::vector<absl::string_view> f =
      absl::StrSplit(absl::StripAsciiWhitespace(text), ' ', absl::SkipEmpty());
  int64_t quota = 0, period = 0;
  if (f.size() != 2 || !absl::SimpleAtoi(f[1], &period) || period <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("cpu.max '", text, "' is not 'QUOTA PERIOD'"));
  }
  if (f[0] == "max") return std::optional<double>();
  if (!absl::SimpleAtoi(f[0], &quota) || quota <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("cpu.max '", text, "': the quota is not 'max' or a positive number"));
  }
  return std::optional<double>(static_cast<double>(quota) / static_cast<double>(period));
}

inline absl::StatusOr<std::optional<double>> ParseCfsQuota(absl::string_view quota_text, absl::string_view period_text) {
  int64_t quota = 0, period = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(quota_text), &quota) || quota == 0 || quota < -1) {
    return absl::InvalidArgumentError(absl::StrCat("cpu.cfs_quota_us '", quota_text, "' is not -1 or a positive number"));
  }
  if (quota == -1) return std::optional<double>();
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(period_text), &period) || period <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("cpu.cfs_period_us '", period_text, "' is not a positive number"));
  }
  return std::optional<double>(static_cast<double>(quota) / static_cast<double>(period));
}

// The quota set at the cgroup directory `dir`, in cores; nullopt when none is, or when its files
// cannot be read or parsed.
inline std::optional<double> QuotaAt(const std::string& dir, bool v2) {
  using cgroup_internal::ReadSmallFile;
  absl::StatusOr<std::optional<double>> quota = std::optional<double>();
  if (v2) {
    if (std::optional<std::string> text = ReadSmallFile(dir + "/cpu.max")) quota = ParseCpuMax(*text);
  } else {
    const std::optional<std::string> text = ReadSmallFile(dir + "/cpu.cfs_quota_us");
    const std::optional<std::string> period = ReadSmallFile(dir + "/cpu.cfs_period_us");
    if (text && period) quota = ParseCfsQuota(*text, *period);
  }
  return quota.ok() ? *quota : std::nullopt;
}

// The smallest CPU quota, in cores, on this process's cgroup and its ancestors; nullopt when none
// is set or none can be read. `root` is prefixed to every path read (/proc/self/..., the mount
// points): "" for the machine itself, a directory laid out like it for tests. The v1 cpu
// controller is read when it is mounted (a hybrid machine keeps it there), v2 otherwise.
inline std::optional<double> CgroupCpuLimit(const std::string& root = "") {
  using cgroup_internal::ReadSmallFile;
  const std::optional<std::string> mountinfo = ReadSmallFile(root + "/proc/self/mountinfo");
  const std::optional<std::string> cgroups = ReadSmallFile(root + "/proc/self/cgroup");
  if (!mountinfo || !cgroups) return std::nullopt;
  const std::vector<CgroupMount> mounts = CpuCgroupMounts(*mountinfo);
  for (const bool v2 : {false, true}) {
    const auto m = std::find_if(mounts.begin(), mounts.end(), [v2](const CgroupMount& x) { return x.v2 == v2; });
    const std::optional<std::string> path = CgroupPathOf(*cgroups, v2);
    if (m == mounts.end() || !path) continue;
    // From the cgroup's directory up to the mount point (CgroupDirectory returns one under it).
    const size_t top = root.size() + m->mount_point.size();
    std::optional<double> limit;
    for (std::string dir = root + CgroupDirectory(*m, *path);; dir.resize(dir.rfind('/'))) {
      if (std::optional<double> quota = QuotaAt(dir, v2)) limit = std::min(limit.value_or(*quota), *quota);
      if (dir.size() <= top) break;
    }
    return limit;
  }
  return std::nullopt;
}

// The cores this process can keep busy: those its affinity mask allows, no more than its cgroup's
// CPU quota rounded up (1.5 CPUs: 2), and at least 1.
inline int UsableCpuCount() {
  int n = AllowedCpuCount();
  if (std::optional<double> limit = CgroupCpuLimit()) {
    n = std::min(n, std::max(1, static_cast<int>(std::ceil(*limit - 1e-9))));
  }
  return std::max(1, n);
}

}  // namespace orrery
