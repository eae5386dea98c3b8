#include "scheduler/job_queue.h"

#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

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

std::string JobQueue::WaitingFor(int64_t id) const {
  const int position = Position(id);
  if (position == 0) return "";
  if (position > 1) return absl::StrCat("waiting behind ", position - 1, " queued job(s)");
  const JobNeed& need = queued_.at(id).second;
  std::string why;
  if (!SlotsFree(need)) {
    why = absl::StrCat("waiting for ", need.slots, " slots (", total_slots_ - used_.slots, " of ", total_slots_,
                       " free)");
  }
  if (!MemoryFree(need)) {
    auto mib = [](int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); };
    absl::StrAppend(&why, why.empty() ? "waiting for " : " and ",
                    absl::StrFormat("%.0f MiB of memory (%.0f of %.0f MiB free)", mib(need.memory_bytes),
                                    mib(total_memory_ - used_.memory_bytes), mib(total_memory_)));
  }
  return why.empty() ? "starting" : why;
}

bool JobQueue::SlotsFree(const JobNeed& need) const { return used_.slots + need.slots <= total_slots_; }

bool JobQueue::MemoryFree(const JobNeed& need) const {
  return total_memory_ <= 0 || need.memory_bytes <= total_memory_ - used_.memory_bytes;
}

std::vector<int64_t> JobQueue::Admit() {
  std::vector<int64_t> admitted;
  while (!order_.empty()) {
    const int64_t id = std::get<1>(*order_.begin());
    const JobNeed need = queued_.at(id).second;
    if (!SlotsFree(need) || !MemoryFree(need)) break;
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
