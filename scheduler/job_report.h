// Reading a job's processes' tagged output lines into its RunReport — shared by the runs that
// drive a job step by step on the local backend (JobRun) and those that launch it as one unit
// under mpirun or Slurm (GroupJobRun).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "scheduler/backend.h"
#include "scheduler/job_spec.h"
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

// Where the process `role` ("learner-2", "evaluator") of a job with logs in `log_dir` appends its
// tagged lines (`orrery learner --events-file`, set by JobRun).
std::string EventsFilePath(const std::string& log_dir, const std::string& role);

// The lines of a process's events file that its log file lacks: `log_lines` are its log file's
// lines ("<time> <role> <stream>| <text>"), `events_lines` its events file's; the events lines
// found in order among the logged texts are dropped, the rest returned in order. A process
// re-attached after a scheduler restart wrote its later tagged lines to its events file only
// (its stdout went to the scheduler that died).
std::vector<std::string> EventsNotInLog(absl::Span<const std::string> log_lines,
                                        absl::Span<const std::string> events_lines);

// A learner's or the evaluator's command line with `--events-file` for `role` added when
// `log_dir` is not "".
std::vector<std::string> WithEventsFile(std::vector<std::string> argv, const std::string& log_dir,
                                        const std::string& role);

// The report of a job whose end no scheduler saw on its processes' output (a restarted scheduler
// had re-attached to them), read from the events files of its learners and evaluator: the
// evaluations, the final one's figures, and each learner's ORRERY_LEARNER_DONE. Exit codes are
// unknown there, so a learner counts as finished when it said so, and as failed otherwise.
// Lines that are not tagged JSON are skipped. Errors, naming the file: no final evaluation, or
// no learner finished.
absl::StatusOr<RunReport> ReportFromEventsFiles(const JobSpec& job, const std::string& log_dir,
                                                double wall_seconds);

}  // namespace orrery::scheduler
