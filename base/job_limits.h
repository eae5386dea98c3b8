// Bounds on a job's sizes, shared by the job spec (scheduler/job_spec.h), which refuses a spec
// beyond them before any process starts, and by the processes' own flag checks. Values past
// them are typos (a job of 100,000 shards would start 100,000 processes), not big jobs.
#pragma once

namespace orrery {

inline constexpr int kMaxServers = 1024;      // shards of one job
inline constexpr int kMaxLearners = 65536;    // learners of one job
inline constexpr int kMaxBatch = 65536;       // images per learner step
inline constexpr double kMaxEpochs = 1000;    // passes over a learner's slice
inline constexpr double kMaxSlowFactor = 1000;  // straggler emulation (slow_learners, --slow)

}  // namespace orrery
