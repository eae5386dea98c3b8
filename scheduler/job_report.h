// Reading a job's processes' tagged output lines into its RunReport — shared by the runs that
// drive a job step by step on the local backend (JobRun) and those that launch it as one unit
// under mpirun or Slurm (GroupJobRun).
#pragma once

#include <cstddef>
#include <string>

#include "nlohmann/json.hpp"
#include "scheduler/backend.h"
#include "scheduler/run_job.h"

namespace orrery::scheduler {

// Splits "ORRERY_TAG {json object}" into its tag and body; false for any other line.
bool ParseTagged(const std::string& line, std::string* tag, nlohmann::json* body);

// j[key] as T, or `fallback` when it is missing or of another type.
template <typename T>
T JsonGet(const nlohmann::json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    return fallback;
  }
}

// "; last lines:\n    ..." with the process's last `n` lines, or "" when it has none.
std::string LastLines(const Backend& backend, ProcessId id, size_t n);

// One ORRERY_EVAL body, made `seconds` after the learners started.
EvalPoint ParseEvalPoint(const nlohmann::json& body, double seconds);

// The final evaluation's figures (accuracy, loss, the shards' counters and staleness) into
// `report`.
void FillFromFinalEval(const nlohmann::json& eval, RunReport* report);

// A finished learner's traffic and time per phase (the body of its ORRERY_LEARNER_DONE line)
// added to `report`.
void AddLearnerTraffic(const nlohmann::json& done, RunReport* report);

}  // namespace orrery::scheduler
