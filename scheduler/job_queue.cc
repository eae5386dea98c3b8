#include "scheduler/job_queue.h"

#include <iterator>

namespace orrery::scheduler {

void JobQueue::Push(int64_t id, int priority, JobNeed need) {
  if (queued_.count(id) != 0) return;
  Key key{-priority, id};
  order_.insert(key);
  queued_.emplace(id, std::make_pair(key, need));
}

bool JobQueue::Remove(int64_t id) {
  auto it = queued_.find(id);
  if (it == queued_.end()) return false;
  order_.erase(it->second.first);
  queued_.erase(it);
  return true;
}

int JobQueue::Position(int64_t id) const {
  auto it = queued_.find(id);
  if (it == queued_.end()) return 0;
  return static_cast<int>(std::distance(order_.begin(), order_.find(it->second.first))) + 1;
}

bool JobQueue::Fits(const JobNeed& need) const {
  if (used_.slots + need.slots > total_slots_) return false;
  return total_memory_ <= 0 || need.memory_bytes <= total_memory_ - used_.memory_bytes;
}

std::vector<int64_t> JobQueue::Admit() {
  std::vector<int64_t> admitted;
  while (!order_.empty()) {
    const int64_t id = std::get<1>(*order_.begin());
    const JobNeed need = queued_.at(id).second;
    if (!Fits(need)) break;
    order_.erase(order_.begin());
    queued_.erase(id);
    Hold(id, need);
    admitted.push_back(id);
  }
  return admitted;
}

void JobQueue::Hold(int64_t id, JobNeed need) {
  if (running_.count(id) != 0) return;
  running_[id] = need;
  used_.slots += need.slots;
  used_.memory_bytes += need.memory_bytes;
}

void JobQueue::Release(int64_t id) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  used_.slots -= it->second.slots;
  used_.memory_bytes -= it->second.memory_bytes;
  running_.erase(it);
}

}  // namespace orrery::scheduler
