#include "scheduler/job_report.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace orrery::scheduler {

bool ParseTagged(const std::string& line, std::string* tag, nlohmann::json* body) {
  if (!absl::StartsWith(line, "ORRERY_")) return false;
  const size_t space = line.find(' ');
  if (space == std::string::npos) return false;
  *body = nlohmann::json::parse(line.substr(space + 1), nullptr, /*allow_exceptions=*/false);
  if (body->is_discarded() || !body->is_object()) return false;
  *tag = line.substr(0, space);
  return true;
}

std::string LastLines(const Backend& backend, ProcessId id, size_t n) {
  std::vector<std::string> tail = backend.Tail(id, n);
  if (tail.empty()) return "";
  return absl::StrCat("; last lines:\n    ", absl::StrJoin(tail, "\n    "));
}

EvalPoint ParseEvalPoint(const nlohmann::json& body, double seconds) {
  EvalPoint p;
  p.seconds = seconds;
  p.test_accuracy = JsonGet<double>(body, "test_accuracy", 0);
  p.test_loss = JsonGet<double>(body, "test_loss", 0);
  const nlohmann::json stats = body.value("stats", nlohmann::json::object());
  p.updates_applied = JsonGet<uint64_t>(stats, "updates_applied", 0);
  p.samples_applied = JsonGet<uint64_t>(stats, "samples_applied", 0);
  return p;
}

void FillFromFinalEval(const nlohmann::json& eval, RunReport* report) {
  const nlohmann::json stats = eval.value("stats", nlohmann::json::object());
  const nlohmann::json st = stats.value("staleness", nlohmann::json::object());
  report->test_accuracy = JsonGet<double>(eval, "test_accuracy", 0);
  report->test_loss = JsonGet<double>(eval, "test_loss", 0);
  report->updates_applied = JsonGet<uint64_t>(stats, "updates_applied", 0);
  report->gradients_applied = JsonGet<uint64_t>(stats, "gradients_applied", 0);
  report->gradients_rejected = JsonGet<uint64_t>(stats, "gradients_rejected", 0);
  report->samples_applied = JsonGet<uint64_t>(stats, "samples_applied", 0);
  report->staleness_mean = JsonGet<double>(st, "mean", 0);
  report->staleness_max = JsonGet<uint64_t>(st, "max", 0);
  report->staleness_histogram = JsonGet<std::vector<uint64_t>>(st, "histogram", {});
  const nlohmann::json age = stats.value("gradient_age_seconds", nlohmann::json::object());
  report->gradient_age_mean_seconds = JsonGet<double>(age, "mean", 0);
  report->gradient_age_max_seconds = JsonGet<double>(age, "max", 0);
  while (!report->staleness_histogram.empty() && report->staleness_histogram.back() == 0) {
    report->staleness_histogram.pop_back();
  }
}

void AddLearnerTraffic(const nlohmann::json& done, RunReport* report) {
  report->pushes += JsonGet<uint64_t>(done, "pushes", 0);
  report->push_bytes += JsonGet<uint64_t>(done, "push_bytes", 0);
  report->pulls += JsonGet<uint64_t>(done, "pulls", 0);
  report->pull_bytes += JsonGet<uint64_t>(done, "pull_bytes", 0);
  report->connection_resets += JsonGet<uint64_t>(done, "connection_resets", 0);
  report->learner_pull_seconds += JsonGet<double>(done, "pull_seconds", 0);
  report->learner_compute_seconds += JsonGet<double>(done, "compute_seconds", 0);
  report->learner_push_seconds += JsonGet<double>(done, "push_seconds", 0);
}

std::string EventsFilePath(const std::string& log_dir, const std::string& role) {
  return absl::StrCat(log_dir, "/", role, ".events");
}

std::vector<std::string> EventsNotInLog(absl::Span<const std::string> log_lines,
                                        absl::Span<const std::string> events_lines) {
  size_t next = 0;  // events_lines[next] is the first not yet found in the log
  for (const std::string& line : log_lines) {
    if (next == events_lines.size()) break;
    const size_t bar = line.find("| ");
    if (bar != std::string::npos && line.compare(bar + 2, std::string::npos, events_lines[next]) == 0) ++next;
  }
  return {events_lines.begin() + static_cast<std::ptrdiff_t>(next), events_lines.end()};
}

std::vector<std::string> WithEventsFile(std::vector<std::string> argv, const std::string& log_dir,
                                        const std::string& role) {
  if (!log_dir.empty()) argv.insert(argv.end(), {"--events-file", EventsFilePath(log_dir, role)});
  return argv;
}

namespace {

// The tagged lines of one events file, in order; none when it is missing.
std::vector<std::pair<std::string, nlohmann::json>> ReadEvents(const std::string& path) {
  std::vector<std::pair<std::string, nlohmann::json>> events;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::string tag;
    nlohmann::json body;
    if (ParseTagged(line, &tag, &body)) events.emplace_back(std::move(tag), std::move(body));
  }
  return events;
}

}  // namespace

absl::StatusOr<RunReport> ReportFromEventsFiles(const JobSpec& job, const std::string& log_dir,
                                                double wall_seconds) {
  RunReport report;
  report.job = job.name;
  report.wall_seconds = wall_seconds;
  const std::string evaluator = EventsFilePath(log_dir, "evaluator");
  std::optional<nlohmann::json> final_eval;
  for (const auto& [tag, body] : ReadEvents(evaluator)) {
    if (tag != "ORRERY_EVAL") continue;
    const EvalPoint p = ParseEvalPoint(body, JsonGet<double>(body, "seconds", 0));
    report.evals.push_back(p);
    if (job.target_accuracy && !report.time_to_target_seconds && p.test_accuracy >= *job.target_accuracy) {
      report.time_to_target_seconds = p.seconds;
    }
    if (JsonGet<bool>(body, "final", false)) final_eval = body;
  }
  // Updates lost to shard restarts: every learner reports each restart it saw, in order; the k-th
  // report of shard s from each learner is the same restart (each learner sees every restart, on
  // its next pull), and the one whose last pull was the newest saw the most lost.
  std::map<std::pair<int, int>, uint64_t> lost_per_restart;  // (shard, k) -> the worst report
  for (int i = 0; i < job.learners; ++i) {
    const std::string role = absl::StrCat("learner-", i);
    std::optional<nlohmann::json> done;
    std::map<int, int> seen;  // shard -> restarts this learner reported so far
    for (const auto& [tag, body] : ReadEvents(EventsFilePath(log_dir, role))) {
      if (tag == "ORRERY_LEARNER_DONE") done = body;
      if (tag == "ORRERY_LEARNER_SHARD_RESTART") {
        const int shard = JsonGet<int>(body, "shard", -1);
        if (shard < 0) continue;
        uint64_t& worst = lost_per_restart[{shard, seen[shard]++}];
        worst = std::max(worst, JsonGet<uint64_t>(body, "updates_lost", 0));
      }
    }
    if (done) {
      ++report.learners_finished;
      AddLearnerTraffic(*done, &report);
      report.train_seconds = std::max(report.train_seconds, JsonGet<double>(*done, "seconds", 0));
    } else {
      ++report.learners_failed;
      report.learner_failures.push_back(
          absl::StrCat(role, ": exited without finishing its epochs (exit status unknown: see ", role, ".log)"));
    }
  }
  if (report.learners_finished == 0) {
    return absl::AbortedError(absl::StrCat("no learner finished its epochs (none wrote ORRERY_LEARNER_DONE to its "
                                           "events file in ", log_dir, ")"));
  }
  if (!final_eval) {
    return absl::AbortedError(absl::StrCat("the evaluator made no final evaluation (none in ", evaluator,
                                           "; see evaluator.log)"));
  }
  FillFromFinalEval(*final_eval, &report);
  for (const auto& [restart, lost] : lost_per_restart) report.updates_lost += lost;
  report.images_per_second = report.samples_applied / std::max(report.train_seconds, 1e-9);
  return report;
}

}  // namespace orrery::scheduler
