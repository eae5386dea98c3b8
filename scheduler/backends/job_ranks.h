// The rank layout of a job launched as one unit (mpirun, srun): ranks 0..S−1 are the parameter
// server shards, S..S+L−1 the learners, and rank S+L the evaluator. Launchers, `orrery mpi-rank`
// and `orrery slurm-rank` all read it from here so that they agree.
#pragma once

#include <string>
#include <vector>

#include "scheduler/job_spec.h"

namespace orrery::scheduler {

enum class RankKind { kServer, kLearner, kEvaluator };

struct RankRole {
  RankKind kind = RankKind::kServer;
  int index = 0;     // shard index, learner index, 0 for the evaluator
  std::string name;  // "server-0", "learner-3", "evaluator": the roles `orrery run` uses
};

// S + L + 1.
int JobRankCount(const JobSpec& job);
// `rank` must be in [0, JobRankCount(job)).
RankRole RoleOfRank(const JobSpec& job, int rank);
// Every rank's role, in rank order.
std::vector<RankRole> JobRanks(const JobSpec& job);

}  // namespace orrery::scheduler
