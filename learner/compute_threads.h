// How many OpenMP threads a learner, an evaluator or `orrery train` computes on.
#pragma once

#include <omp.h>

#include "base/cpu_quota.h"

namespace orrery::learner {

// Sizes OpenMP's pool: `requested` threads, or with 0 one per core this process can keep busy
// (UsableCpuCount: its affinity mask, capped by its cgroup's CPU quota; OpenMP's own default
// counts the mask only, and would oversubscribe a pod limited to fewer CPUs than its node has).
// Returns the number set.
inline int SetComputeThreads(int requested) {
  const int threads = requested > 0 ? requested : UsableCpuCount();
  omp_set_num_threads(threads);
  return threads;
}

}  // namespace orrery::learner
