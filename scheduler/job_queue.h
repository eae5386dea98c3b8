// The scheduler daemon's admission rule: jobs wait for resource slots (cores) in priority order,
// first come first served among equal priorities. Pure logic, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <vector>

namespace orrery::scheduler {

// Strict order: the job at the head of the queue starts as soon as enough slots are free, and the
// jobs behind it wait even if they would fit (so a large job is never starved by small ones).
// Threads: not thread-safe; the daemon uses it on its loop thread.
class JobQueue {
 public:
  explicit JobQueue(int total_slots) : total_slots_(total_slots) {}

  int total_slots() const { return total_slots_; }
  int used_slots() const { return used_slots_; }
  size_t size() const { return order_.size(); }

  // Queues job `id`, which needs `slots` (1 <= slots <= total_slots, checked by the caller) and
  // runs before every queued job of lower `priority` and after those of equal priority and a
  // smaller id. Re-pushing a queued id is a no-op.
  void Push(int64_t id, int priority, int slots);
  // Drops a queued job; false if it was not queued.
  bool Remove(int64_t id);
  // 1 for the job that starts next, 2 for the one after, ...; 0 when `id` is not queued.
  int Position(int64_t id) const;

  // Pops, in order, the jobs that can start now and holds their slots until Release.
  std::vector<int64_t> Admit();
  // Holds `slots` for a job that is already running (re-attached after a restart), even beyond
  // the total (it was admitted by an earlier configuration).
  void Hold(int64_t id, int slots);
  // Frees a running job's slots; unknown ids are ignored.
  void Release(int64_t id);

 private:
  using Key = std::tuple<int, int64_t>;  // (-priority, id): smallest first
  int total_slots_;
  int used_slots_ = 0;
  std::set<Key> order_;
  std::map<int64_t, std::pair<Key, int>> queued_;  // id -> (key, slots)
  std::map<int64_t, int> running_;                 // id -> slots held
};

}  // namespace orrery::scheduler
