// A real single-node Slurm for a test, owned by the test: scripts/slurm-local.sh starts its own
// munged, slurmctld -D and slurmd -D with a slurm.conf in a fresh directory, and the destructor
// stops them. Clients reach it with SLURM_CONF=<dir>/slurm.conf (env()).
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace orrery::scheduler::testing {

class SlurmCluster {
 public:
  // NOT_FOUND (saying what is missing) when Slurm cannot run here: not installed, not root.
  // UNAVAILABLE when the daemons did not come up (with their logs' last lines).
  static absl::StatusOr<std::unique_ptr<SlurmCluster>> Start(const std::string& dir) {
    int code = 0;
    std::string out = Run(absl::StrCat(ORRERY_SOURCE_DIR, "/scripts/slurm-local.sh start ", dir), &code);
    if (code == 3) return absl::NotFoundError(out);
    if (code != 0) return absl::UnavailableError(absl::StrCat("scripts/slurm-local.sh start failed:\n", out));
    return std::unique_ptr<SlurmCluster>(new SlurmCluster(dir));
  }
  ~SlurmCluster() { Run(absl::StrCat(ORRERY_SOURCE_DIR, "/scripts/slurm-local.sh stop ", dir_), nullptr); }

  std::map<std::string, std::string> env() const { return {{"SLURM_CONF", dir_ + "/slurm.conf"}}; }

  // Runs `command` (stdout and stderr together) and returns its output.
  static std::string Run(const std::string& command, int* code) {
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    std::string out;
    if (pipe == nullptr) return out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
    const int status = ::pclose(pipe);
    if (code != nullptr) *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
  }

 private:
  explicit SlurmCluster(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace orrery::scheduler::testing
