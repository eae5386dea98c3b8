// Bounds on a job's sizes, shared by the job spec (scheduler/job_spec.h), which refuses a spec
// beyond them before any process starts, and by the processes' own flag checks. Values past
// them are typos (a job of 100,000 shards would start 100,000 processes), not big jobs.
#pragma once

#include <cstdint>

namespace orrery {

inline constexpr int kMaxServers = 1024;      // shards of one job
inline constexpr int kMaxLearners = 65536;    // learners of one job
inline constexpr int kMaxBatch = 65536;       // images per learner step
inline constexpr double kMaxEpochs = 1000;    // passes over a learner's slice
inline constexpr double kMaxSlowFactor = 1000;  // straggler emulation (slow_learners, --slow)
// Parameters of one model: 2^30, 4 GiB of fp32 weights, which every learner and the evaluator
// hold whole (with as much again in gradients) and the shards hold in parts. Checked where a
// model is built (learner::Model) and where a shard takes a layout from a peer (ShardPlan).
inline constexpr int64_t kMaxModelParameters = int64_t{1} << 30;
// Chunks one layout may cut a model into (each costs a shard some bookkeeping): 2^24.
inline constexpr int64_t kMaxModelChunks = int64_t{1} << 24;

}  // namespace orrery
