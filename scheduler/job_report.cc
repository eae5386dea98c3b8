#include "scheduler/job_report.h"

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
  while (!report->staleness_histogram.empty() && report->staleness_histogram.back() == 0) {
    report->staleness_histogram.pop_back();
  }
}

void AddLearnerTraffic(const nlohmann::json& done, RunReport* report) {
  report->pushes += JsonGet<uint64_t>(done, "pushes", 0);
  report->push_bytes += JsonGet<uint64_t>(done, "push_bytes", 0);
  report->pulls += JsonGet<uint64_t>(done, "pulls", 0);
  report->pull_bytes += JsonGet<uint64_t>(done, "pull_bytes", 0);
  report->learner_pull_seconds += JsonGet<double>(done, "pull_seconds", 0);
  report->learner_compute_seconds += JsonGet<double>(done, "compute_seconds", 0);
  report->learner_push_seconds += JsonGet<double>(done, "push_seconds", 0);
}

}  // namespace orrery::scheduler
