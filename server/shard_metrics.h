// Prometheus metrics of one shard (orrery server --metrics-listen): read from the shard's own
// counters at every scrape, so they cost nothing between scrapes.
//
//   orrery_shard_version                      gauge    updates applied
//   orrery_shard_pushes_total                 counter  accepted pushes
//   orrery_shard_pulls_total                  counter  answered pulls
//   orrery_shard_gradients_applied_total      counter
//   orrery_shard_gradients_rejected_total     counter  {reason="nonfinite"|"other"}
//   orrery_shard_samples_applied_total        counter
//   orrery_shard_active_learners              gauge
//   orrery_shard_staleness                    histogram of applied gradients' staleness τ
// Every series carries {job, shard}.
#pragma once

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/parameter_shard.h"

namespace orrery::server {

class ShardMetrics final : public prometheus::Collectable {
 public:
  // `shard` is borrowed and must outlive the exposer this is registered with.
  explicit ShardMetrics(ParameterShard* shard) : shard_(shard) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  ParameterShard* shard_;
};

}  // namespace orrery::server
