// What the backends that keep their processes in a map of id -> Proc (LocalBackend,
// GroupBackend) do alike with it. A Proc has `spec` (a ProcessSpec), `state` and `tail` (its
// recent output lines, oldest first).
#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "scheduler/backend.h"

namespace orrery::scheduler {

// The id of the process whose role is `role` (Backend::Find).
template <class Procs>
std::optional<ProcessId> FindRole(const Procs& procs, const std::string& role) {
  for (const auto& [id, proc] : procs) {
    if (proc->spec.role == role) return id;
  }
  return std::nullopt;
}

// Whether every process has exited for good (Backend::AllExited).
template <class Procs>
bool EveryProcessExited(const Procs& procs) {
  return std::all_of(procs.begin(), procs.end(),
                     [](const auto& entry) { return entry.second->state == ProcessState::kExited; });
}

// Appends `line` to `tail`, keeping the last `keep` lines.
inline void KeepTail(std::deque<std::string>& tail, size_t keep, std::string line) {
  tail.push_back(std::move(line));
  while (tail.size() > keep) tail.pop_front();
}

// The newest `n` lines of `tail`, oldest first (Backend::Tail).
inline std::vector<std::string> NewestLines(const std::deque<std::string>& tail, size_t n) {
  const size_t count = std::min(n, tail.size());
  return std::vector<std::string>(tail.end() - static_cast<std::ptrdiff_t>(count), tail.end());
}

}  // namespace orrery::scheduler
