#include "scheduler/job_queue.h"

#include <iterator>

namespace orrery::scheduler {

void JobQueue::Push(int64_t id, int priority, int slots) {
  if (queued_.count(id) != 0) return;
  Key key{-priority, id};
  order_.insert(key);
  queued_.emplace(id, std::make_pair(key, slots));
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

std::vector<int64_t> JobQueue::Admit() {
  std::vector<int64_t> admitted;
  while (!order_.empty()) {
    const int64_t id = std::get<1>(*order_.begin());
    const int slots = queued_.at(id).second;
    if (used_slots_ + slots > total_slots_) break;
    order_.erase(order_.begin());
    queued_.erase(id);
    Hold(id, slots);
    admitted.push_back(id);
  }
  return admitted;
}

void JobQueue::Hold(int64_t id, int slots) {
  if (running_.count(id) != 0) return;
  running_[id] = slots;
  used_slots_ += slots;
}

void JobQueue::Release(int64_t id) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  used_slots_ -= it->second;
  running_.erase(it);
}

}  // namespace orrery::scheduler
