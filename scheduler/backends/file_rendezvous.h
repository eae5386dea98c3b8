// A Rendezvous through a directory every rank can see (a shared filesystem under Slurm, a local
// directory on one machine): each rank publishes small files, written atomically (write then
// rename), and polls for the others'. Used by `orrery slurm-rank`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "scheduler/backends/rendezvous.h"

namespace orrery::scheduler {

// Files in `dir` (created if missing): gather-<k>-<rank> for the k-th AllGather,
// barrier-<phase>-<rank>, and `abort` (the first abort's "rank R: reason"). A directory must
// serve one job only: the launcher makes a fresh one per job and removes it afterwards.
//
// Threads: as Rendezvous. Blocking calls poll every `poll_interval`.
class FileRendezvous final : public Rendezvous {
 public:
  // INVALID_ARGUMENT unless 0 <= rank < size; the directory error if it cannot be created.
  static absl::StatusOr<std::unique_ptr<FileRendezvous>> Create(
      const std::string& dir, int rank, int size, absl::Duration poll_interval = absl::Milliseconds(100));

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::StatusOr<std::vector<std::string>> AllGather(const std::string& value,
                                                     absl::Duration timeout) override;
  absl::Status Arrive(int phase) override;
  absl::StatusOr<bool> Test(int phase) override;
  void Finalize() override {}
  void Abort(int code, const std::string& reason) override;

 private:
  FileRendezvous(std::string dir, int rank, int size, absl::Duration poll_interval)
      : dir_(std::move(dir)), rank_(rank), size_(size), poll_interval_(poll_interval) {}
  // ABORTED with the abort file's text when some rank aborted.
  absl::Status CheckAborted() const;
  absl::Status Publish(const std::string& name, const std::string& content) const;

  std::string dir_;
  int rank_;
  int size_;
  absl::Duration poll_interval_;
  int gathers_ = 0;
};

}  // namespace orrery::scheduler
