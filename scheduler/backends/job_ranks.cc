#include "scheduler/backends/job_ranks.h"

#include "absl/strings/str_cat.h"

namespace orrery::scheduler {

int JobRankCount(const JobSpec& job) { return job.servers + job.learners + 1; }

RankRole RoleOfRank(const JobSpec& job, int rank) {
  RankRole role;
  if (rank < job.servers) {
    role.kind = RankKind::kServer;
    role.index = rank;
    role.name = absl::StrCat("server-", rank);
  } else if (rank < job.servers + job.learners) {
    role.kind = RankKind::kLearner;
    role.index = rank - job.servers;
    role.name = absl::StrCat("learner-", role.index);
  } else {
    role.kind = RankKind::kEvaluator;
    role.name = "evaluator";
  }
  return role;
}

std::vector<RankRole> JobRanks(const JobSpec& job) {
  std::vector<RankRole> roles;
  for (int r = 0; r < JobRankCount(job); ++r) roles.push_back(RoleOfRank(job, r));
  return roles;
}

}  // namespace orrery::scheduler
