// The scheduler daemon's admission rule: jobs wait for resource slots (cores) and memory in
// priority order, first come first served among equal priorities. Pure logic, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace orrery::scheduler {

// What a job holds while it runs.
struct JobNeed {
  int slots = 0;
  int64_t memory_bytes = 0;  // the estimate of its processes' memory; 0 when not counted
};

// Strict order: the job at the head of the queue starts as soon as enough slots and memory are
// free, and the jobs behind it wait even if they would fit (so a large job is never starved by
// small ones). Memory is counted only when the queue has a memory total (> 0).
// Threads: not thread-safe; the daemon uses it on its loop thread.
class JobQueue {
 public:
  explicit JobQueue(int total_slots, int64_t total_memory_bytes = 0)
      : total_slots_(total_slots), total_memory_(total_memory_bytes) {}

  int total_slots() const { return total_slots_; }
  int used_slots() const { return used_.slots; }
  int64_t total_memory_bytes() const { return total_memory_; }  // 0: memory not counted
  int64_t used_memory_bytes() const { return used_.memory_bytes; }
  size_t size() const { return order_.size(); }

  // Queues job `id`, which needs `need` (1 <= slots <= total_slots and memory <= the total,
  // checked by the caller) and runs before every queued job of lower `priority` and after those
  // of equal priority and a smaller id. Re-pushing a queued id is a no-op.
  void Push(int64_t id, int priority, JobNeed need);
  // Drops a queued job; false if it was not queued.
  bool Remove(int64_t id);
  // 1 for the job that starts next, 2 for the one after, ...; 0 when `id` is not queued.
  int Position(int64_t id) const;
  // Why queued job `id` has not started, for people: what it needs beyond what is free, or the
  // jobs ahead of it. "" when it is not queued.
  std::string WaitingFor(int64_t id) const;

  // Pops, in order, the jobs that can start now and holds what they need until Release.
  std::vector<int64_t> Admit();
  // Holds `need` for a job that is already running (re-attached after a restart), even beyond
  // the totals (it was admitted by an earlier configuration).
  void Hold(int64_t id, JobNeed need);
  // Frees what a running job held; unknown ids are ignored.
  void Release(int64_t id);

 private:
  using Key = std::tuple<int, int64_t>;  // (-priority, id): smallest first
  // Whether `need`'s slots, and its memory (always, when memory is not counted), are free now.
  bool SlotsFree(const JobNeed& need) const;
  bool MemoryFree(const JobNeed& need) const;

  int total_slots_;
  int64_t total_memory_;
  JobNeed used_;
  std::set<Key> order_;
  std::map<int64_t, std::pair<Key, JobNeed>> queued_;  // id -> (key, need)
  std::map<int64_t, JobNeed> running_;                 // id -> held
};

}  // namespace orrery::scheduler
