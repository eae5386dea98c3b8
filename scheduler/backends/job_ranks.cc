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

std::vector<ProcessSpec> RankProcesses(const JobSpec& job, const RankJobOptions& o, const std::string& subcommand) {
  std::vector<std::string> argv = {o.binary, subcommand, o.job_file};
  if (!o.host.empty()) argv.insert(argv.end(), {"--host", o.host});
  if (o.threads_per_learner > 0) argv.insert(argv.end(), {"--threads", absl::StrCat(o.threads_per_learner)});
  // The ranks' events files go beside their logs, for a scheduler restarted after a crash.
  if (!o.log_dir.empty()) argv.insert(argv.end(), {"--events-dir", o.log_dir});
  std::vector<ProcessSpec> specs;
  for (const RankRole& role : JobRanks(job)) {
    ProcessSpec spec;
    spec.role = o.role_prefix + role.name;
    spec.argv = argv;
    if (!o.token.empty()) spec.env["ORRERY_TOKEN"] = o.token;
    spec.env["OMP_WAIT_POLICY"] = "passive";
    if (!o.log_dir.empty()) spec.log_path = absl::StrCat(o.log_dir, "/", role.name, ".log");
    specs.push_back(std::move(spec));
  }
  return specs;
}

}  // namespace orrery::scheduler
