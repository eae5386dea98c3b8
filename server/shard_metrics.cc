#include "server/shard_metrics.h"

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace orrery::server {
namespace {

prometheus::MetricFamily Family(const std::string& name, const std::string& help,
                                prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

}  // namespace

std::vector<prometheus::MetricFamily> ShardMetrics::Collect() const {
  const ShardConfig& config = shard_->config();
  proto::StatsRequest request;
  request.set_job_id(config.job_id);
  request.set_token(config.token);
  absl::StatusOr<proto::StatsResponse> stats = shard_->Stats(request);
  if (!stats.ok()) return {};
  const std::vector<prometheus::ClientMetric::Label> labels = {
      {"job", config.job_id}, {"shard", absl::StrCat(config.shard_index)}};
  auto sample = [&](double value, bool counter,
                    std::vector<prometheus::ClientMetric::Label> extra = {}) {
    prometheus::ClientMetric m;
    m.label = labels;
    m.label.insert(m.label.end(), extra.begin(), extra.end());
    (counter ? m.counter.value : m.gauge.value) = value;
    return m;
  };
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  auto add = [&](const std::string& name, const std::string& help, bool counter, double value) {
    out.push_back(Family(name, help, counter ? MetricType::Counter : MetricType::Gauge));
    out.back().metric.push_back(sample(value, counter));
  };
  const proto::StatsResponse& s = *stats;
  add("orrery_shard_version", "Updates applied (the shard's weight version)", false,
      static_cast<double>(s.version()));
  add("orrery_shard_pushes_total", "Pushes accepted", true, static_cast<double>(s.pushes()));
  add("orrery_shard_pulls_total", "Pulls answered", true, static_cast<double>(s.pulls()));
  add("orrery_shard_gradients_applied_total", "Gradients applied", true,
      static_cast<double>(s.gradients_applied()));
  add("orrery_shard_samples_applied_total", "Training samples behind the applied gradients", true,
      static_cast<double>(s.samples_applied()));
  add("orrery_shard_active_learners", "Learners counted by the protocol", false,
      static_cast<double>(s.active_learners()));
  out.push_back(Family("orrery_shard_gradients_rejected_total",
                       "Pushes rejected (bad input, NaN or Inf, stale protocol state)",
                       MetricType::Counter));
  out.back().metric.push_back(sample(static_cast<double>(s.gradients_rejected_nonfinite()), true,
                                     {{"reason", "nonfinite"}}));
  out.back().metric.push_back(sample(
      static_cast<double>(s.gradients_rejected() - s.gradients_rejected_nonfinite()), true,
      {{"reason", "other"}}));

  prometheus::MetricFamily staleness = Family(
      "orrery_shard_staleness", "Staleness of applied gradients (versions behind)", MetricType::Histogram);
  prometheus::ClientMetric h;
  h.label = labels;
  uint64_t cumulative = 0;
  const int n = s.staleness_histogram_size();
  for (int t = 0; t + 1 < n; ++t) {  // the last bucket holds everything >= its index: +Inf
    cumulative += s.staleness_histogram(t);
    h.histogram.bucket.push_back({cumulative, static_cast<double>(t)});
  }
  if (n > 0) cumulative += s.staleness_histogram(n - 1);
  h.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
  h.histogram.sample_count = cumulative;
  h.histogram.sample_sum = s.staleness_sum();
  staleness.metric.push_back(std::move(h));
  out.push_back(std::move(staleness));

  prometheus::MetricFamily age = Family(
      "orrery_shard_gradient_age_seconds",
      "Seconds from this shard's answer to a learner's pull to that learner's gradient arriving",
      MetricType::Summary);
  prometheus::ClientMetric a;
  a.label = labels;
  a.summary.sample_count = s.gradient_age_count();
  a.summary.sample_sum = s.gradient_age_sum();
  age.metric.push_back(std::move(a));
  out.push_back(std::move(age));
  add("orrery_shard_gradient_age_max_seconds", "The oldest gradient's age so far", false,
      s.gradient_age_max());
  return out;
}

}  // namespace orrery::server
