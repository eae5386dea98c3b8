// The scheduler daemon's durable state: every submitted job and the processes it runs, in one
// SQLite file (WAL, synchronous=FULL), so a daemon killed with -9 and restarted loses nothing
// that it acknowledged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scheduler/job_state.h"

struct sqlite3;
struct sqlite3_stmt;

namespace orrery::scheduler {

// One process of a running job, as last seen.
struct ProcessRecord {
  std::string role;          // without the daemon's per-job prefix: "server-0", "learner-1"
  int pid = 0;               // of its latest incarnation; also its process group
  uint64_t start_ticks = 0;  // field 22 of /proc/<pid>/stat: tells a reused pid apart
  int incarnation = 0;
  std::string exit;          // "" while it runs; else ExitStatus::ToString()
  // A local learner's {"argv", "env", "log_path"} (JSON): what a restarted daemon runs to restart
  // it if it crashes while re-attached. "" = none. Holds the job's token (in env): the store is
  // the daemon's own file.
  std::string relaunch;
};

struct JobRecord {
  int64_t id = 0;  // assigned by Insert, increasing, never reused
  std::string name;
  std::string spec_yaml;
  std::string base_dir;
  int priority = 0;
  int slots = 1;
  std::string backend = "local";
  JobState state = JobState::kQueued;
  std::string reason;
  bool cancel_requested = false;
  bool reattached = false;
  int64_t submitted_ms = 0;  // Unix milliseconds
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  std::string log_dir;
  std::string result_json;
  double test_accuracy = 0;
  std::string boot_id;  // the machine's boot id when the job started (pids mean nothing after a reboot)
  std::vector<ProcessRecord> processes;
};

// Threads: not thread-safe; one thread (the daemon's loop) owns it. Every call blocks for the
// disk (a commit waits for fsync). Errors are INTERNAL with SQLite's message and the file named.
class JobStore {
 public:
  // Opens or creates the store at `path` (its directory must exist).
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Stores a new job (its processes too) and sets record->id.
  absl::Status Insert(JobRecord* record);
  // Rewrites the job's columns (not its processes); NOT_FOUND for an unknown id.
  absl::Status Update(const JobRecord& record);
  // Stores the job's columns and replaces its processes with `record.processes`, atomically.
  absl::Status UpdateWithProcesses(const JobRecord& record);
  // Inserts or replaces one process of a job (keyed by role).
  absl::Status PutProcess(int64_t job_id, const ProcessRecord& process);
  // Every job, by id, with its processes.
  absl::StatusOr<std::vector<JobRecord>> LoadAll();

  const std::string& path() const { return path_; }

 private:
  JobStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::Status Init();
  absl::Status Exec(const char* sql);
  absl::StatusOr<sqlite3_stmt*> Prepare(const char* sql);
  absl::Status Error(const std::string& what) const;
  absl::Status WriteJob(const JobRecord& record);
  absl::Status WriteProcess(int64_t job_id, const ProcessRecord& process);

  sqlite3* db_;
  std::string path_;
  std::vector<std::pair<const char*, sqlite3_stmt*>> statements_;  // prepared once, by SQL text
};

}  // namespace orrery::scheduler
