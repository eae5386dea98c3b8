// The rank layout of a job launched as one unit (mpirun, srun): ranks 0..S−1 are the parameter
// server shards, S..S+L−1 the learners, and rank S+L the evaluator. Launchers, `orrery mpi-rank`
// and `orrery slurm-rank` all read it from here so that they agree.
#pragma once

#include <string>
#include <vector>

#include "scheduler/backend.h"
#include "scheduler/job_spec.h"

namespace orrery::scheduler {

enum class RankKind { kServer, kLearner, kEvaluator };

struct RankRole {
  RankKind kind = RankKind::kServer;
  int index = 0;     // shard index, learner index, 0 for the evaluator
  std::string name;  // "server-0", "learner-3", "evaluator": the roles `orrery run` uses
};

// What a launcher needs to start a job's ranks (MpiJobProcesses, SlurmJobProcesses).
struct RankJobOptions {
  std::string binary;    // the orrery executable, the same path on every node
  std::string job_file;  // holds the job (WriteJobSpecFile), where every node can read it
  std::string token;     // in the ranks' environment (ORRERY_TOKEN), never on a command line; "" lets rank 0 make one
  std::string log_dir;   // per-role log files; "" = none
  std::string role_prefix;
  std::string host;      // --host for the ranks; "" = automatic
  int threads_per_learner = 0;
};

// S + L + 1.
int JobRankCount(const JobSpec& job);
// `rank` must be in [0, JobRankCount(job)).
RankRole RoleOfRank(const JobSpec& job, int rank);
// Every rank's role, in rank order.
std::vector<RankRole> JobRanks(const JobSpec& job);

// What a launcher starts for `job`: S + L + 1 specs, one per rank (roles server-i, learner-i,
// evaluator, each `role_prefix` + role), all running `<binary> <subcommand> <job_file>` ("mpi-rank",
// "slurm-rank") with the token in the environment and OpenMP's idle threads sleeping (several
// compute processes share the cores).
std::vector<ProcessSpec> RankProcesses(const JobSpec& job, const RankJobOptions& o, const std::string& subcommand);

}  // namespace orrery::scheduler
