#include "scheduler/backends/job_spec_yaml.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/replace_file.h"
#include "yaml-cpp/yaml.h"

namespace orrery::scheduler {
namespace {

// Shortest text that reads back to the same double.
std::string Exact(double v) {
  for (int digits = 6; digits <= 17; ++digits) {
    std::string text = absl::StrFormat("%.*g", digits, v);
    if (std::strtod(text.c_str(), nullptr) == v) return text;
  }
  return absl::StrFormat("%.17g", v);
}

std::string Seconds(absl::Duration d) { return Exact(absl::ToDoubleSeconds(d)); }

}  // namespace

std::string JobSpecToYaml(const JobSpec& job) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << job.name;
  out << YAML::Key << "model" << YAML::Value << YAML::DoubleQuoted << job.model_path;
  out << YAML::Key << "data" << YAML::Value << YAML::DoubleQuoted << job.data_dir;
  out << YAML::Key << "backend" << YAML::Value << BackendKindName(job.backend);
  out << YAML::Key << "servers" << YAML::Value << job.servers;
  out << YAML::Key << "learners" << YAML::Value << job.learners;
  out << YAML::Key << "protocol" << YAML::Value << ProtocolToString(job.protocol);
  out << YAML::Key << "lr" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "base" << YAML::Value << Exact(job.lr.base);
  out << YAML::Key << "staleness" << YAML::Value << LrStalenessName(job.lr.staleness);
  out << YAML::Key << "momentum" << YAML::Value << Exact(job.lr.momentum);
  out << YAML::EndMap;
  out << YAML::Key << "batch" << YAML::Value << job.batch;
  out << YAML::Key << "epochs" << YAML::Value << Exact(job.epochs);
  out << YAML::Key << "seed" << YAML::Value << absl::StrCat(job.seed);
  if (job.target_accuracy) out << YAML::Key << "target_accuracy" << YAML::Value << Exact(*job.target_accuracy);
  if (!job.slow_learners.empty()) {
    out << YAML::Key << "slow_learners" << YAML::Value << YAML::BeginSeq;
    for (const SlowLearner& s : job.slow_learners) {
      out << YAML::Flow << YAML::BeginMap << YAML::Key << "learner" << YAML::Value << s.learner << YAML::Key
          << "factor" << YAML::Value << Exact(s.factor) << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  if (job.limit_train) out << YAML::Key << "limit_train" << YAML::Value << absl::StrCat(*job.limit_train);
  if (job.limit_test) out << YAML::Key << "limit_test" << YAML::Value << absl::StrCat(*job.limit_test);
  if (job.eval_every) out << YAML::Key << "eval_every_seconds" << YAML::Value << Seconds(*job.eval_every);
  if (job.learner_timeout) {
    out << YAML::Key << "learner_timeout_seconds" << YAML::Value << Seconds(*job.learner_timeout);
  }
  out << YAML::Key << "restart" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "max_restarts" << YAML::Value << job.restart.max_restarts;
  out << YAML::Key << "backoff_seconds" << YAML::Value << Seconds(job.restart.backoff);
  out << YAML::Key << "max_backoff_seconds" << YAML::Value << Seconds(job.restart.max_backoff);
  out << YAML::EndMap;
  if (job.checkpoint) {
    out << YAML::Key << "checkpoint" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "dir" << YAML::Value << YAML::DoubleQuoted << job.checkpoint->dir;
    out << YAML::Key << "every_seconds" << YAML::Value << Seconds(job.checkpoint->every);
    out << YAML::EndMap;
  }
  out << YAML::Key << "precision" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "wire" << YAML::Value << NumberFormatName(job.precision.wire);
  out << YAML::Key << "weights" << YAML::Value << NumberFormatName(job.precision.weights);
  out << YAML::Key << "compute" << YAML::Value << NumberFormatName(job.precision.compute);
  out << YAML::Key << "fl" << YAML::Value << job.precision.fl;
  out << YAML::EndMap;
  out << YAML::Key << "bind" << YAML::Value << BindingName(job.bind);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

absl::Status WriteJobSpecFile(const JobSpec& job, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  absl::Status st = ReplaceFile(path, path + ".tmp", JobSpecToYaml(job));
  if (!st.ok()) return absl::UnavailableError(absl::StrCat("the job spec file: ", st.message()));
  return absl::OkStatus();
}

}  // namespace orrery::scheduler
