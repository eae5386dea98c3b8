// Running statistics of the staleness of applied gradients: histogram, mean, max.
#pragma once

#include <cstdint>
#include <vector>

namespace orrery::server {

// Not thread-safe; the owner locks.
class StalenessStats {
 public:
  // Bucket t counts staleness t; the last bucket counts everything >= its index.
  static constexpr int kBuckets = 65;

  StalenessStats() : histogram_(kBuckets, 0) {}

  void Record(uint64_t staleness) {
    ++histogram_[staleness < kBuckets - 1 ? staleness : kBuckets - 1];
    ++count_;
    sum_ += static_cast<double>(staleness);
    if (staleness > max_) max_ = staleness;
  }

  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_); }
  const std::vector<uint64_t>& histogram() const { return histogram_; }

  // From checkpointed parts; false (and unchanged) when they do not fit together as Record
  // leaves them: the histogram's size, its total against `count`, its highest bucket against
  // `max`, and `sum` finite and within [0, max * count].
  bool Restore(std::vector<uint64_t> histogram, uint64_t count, double sum, uint64_t max) {
    if (histogram.size() != static_cast<size_t>(kBuckets)) return false;
    uint64_t total = 0;
    int top = -1;
    for (int t = 0; t < kBuckets; ++t) {
      if (histogram[t] > UINT64_MAX - total) return false;
      total += histogram[t];
      if (histogram[t] > 0) top = t;
    }
    if (total != count) return false;
    const uint64_t highest = static_cast<uint64_t>(top);  // the last bucket holds >= its index
    const bool max_fits = top < 0 ? max == 0 : (top < kBuckets - 1 ? max == highest : max >= highest);
    if (!max_fits) return false;
    if (!(sum >= 0 && sum <= static_cast<double>(max) * static_cast<double>(count))) return false;
    histogram_ = std::move(histogram);
    count_ = count;
    sum_ = sum;
    max_ = max;
    return true;
  }

  bool operator==(const StalenessStats&) const = default;

 private:
  std::vector<uint64_t> histogram_;
  uint64_t count_ = 0;
  double sum_ = 0;
  uint64_t max_ = 0;
};

// The age of applied gradients in seconds: from the moment the shard answered the learner's pull
// (the weights it computed on) to the gradient's arrival, which fixes its staleness. With updates
// at a steady rate r, mean staleness = r * mean age when the updates fall uniformly over the
// gradients' lifetimes (bench/experiments/staleness_distribution.py compares the two).
struct GradientAgeStats {
  uint64_t count = 0;
  double sum = 0;  // seconds
  double max = 0;  // seconds

  void Record(double seconds) {
    ++count;
    sum += seconds;
    if (seconds > max) max = seconds;
  }
};

}  // namespace orrery::server
