// Writes a parsed JobSpec back out as a job spec YAML that ParseJobSpec reads to an equal spec:
// every key explicit, paths absolute. Launchers hand it to processes on other machines (a shared
// file for mpirun and Slurm ranks, a ConfigMap on Kubernetes).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "scheduler/job_spec.h"

namespace orrery::scheduler {

// Pure. Paths are written as they are in `job` (absolute after parsing; a caller may substitute
// the paths the processes will see, as the Kubernetes renderer does).
std::string JobSpecToYaml(const JobSpec& job);

// Writes JobSpecToYaml(job) to `path` (atomically: a temporary file, then rename).
absl::Status WriteJobSpecFile(const JobSpec& job, const std::string& path);

}  // namespace orrery::scheduler
