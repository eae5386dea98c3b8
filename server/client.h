// The learner-side parameter-server client. It hides the sharding: the learner sees one flat
// float buffer (all tensors in layout order) for weights and one for gradients, and the client
// talks to all S shards concurrently over asynchronous gRPC, each call with a deadline, retrying
// UNAVAILABLE with exponential backoff.
//
// Typical learner loop:
//   ASSIGN_OR_RETURN(auto ps, PsClient::Connect(options));
//   RETURN_IF_ERROR(ps->Init(initial_weights));        // every learner may send it; first wins
//   for (int64_t t = ps->start_clock(); t < steps; ++t) {
//     RETURN_IF_ERROR(ps->Pull(t, weights));            // may wait (hardsync, ssp)
//     ... compute grads on weights ...
//     absl::Status st = ps->Push(t, grads, batch, loss);
//     if (absl::IsFailedPrecondition(st)) { t = ps->start_clock() - 1; continue; }  // dropped
//     RETURN_IF_ERROR(st);
//   }
//   ps->Leave();
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parameter_server.pb.h"
#include "server/tls.h"

namespace orrery::server {

struct TensorShape {
  std::string name;
  uint64_t element_count = 0;
};

struct ClientOptions {
  std::vector<std::string> endpoints;  // host:port of shard i at index i; S = endpoints.size()
  std::string job_id;
  std::string token;
  int learner_id = -1;                 // -1: shard 0 assigns one; -2: observer (pull only)
  std::vector<TensorShape> tensors;    // the model, in flat-buffer order
  uint32_t chunk_size = 16384;         // elements per chunk; every process of a job must agree
  absl::Duration rpc_timeout = absl::Seconds(30);   // per attempt: Register, Init, Push, Stats, Leave
  absl::Duration pull_timeout = absl::Minutes(10);  // a pull may wait for other learners
  absl::Duration retry_budget = absl::Seconds(30);  // total backoff spent retrying UNAVAILABLE
  // Push over PushStream (server/push_streams.h): one long-lived stream per shard, driven by the
  // calling thread (with spreads_shards(), each shard's by a thread of its own), instead of a
  // unary Push call per shard and push. Shards without the method
  // (UNIMPLEMENTED) and pushes whose stream broke go through the unary Push.
  bool push_streams = true;
  int64_t max_message_bytes = 512ll << 20;
  // A shard's pull larger than this comes in parts of about this many bytes (PullRequest.part),
  // two on the wire at a time, each decoded on arrival: receiving and decoding overlap instead of
  // following one another (and FIXED16 pulls overlap the shard's encoding). 0: one call per shard.
  uint64_t pull_part_bytes = 2ull << 20;
  // A push to a shard of more than this goes on its push stream in parts of about this many
  // bytes (PushRequest.part), each encoded while the one before is on the wire and checked by the
  // shard on arrival; the shard applies the push once, when its last part has come. 0: whole.
  uint64_t push_part_bytes = 2ull << 20;
  // The encoding of pushed gradients and pulled weights (a job's precision.wire): FP32 or
  // FIXED16, which halves the bytes of both. FIXED16 gradients are rounded stochastically, element
  // e of the flat buffer drawing counter e of the stream keyed by (learner id, step), so a run is
  // reproducible and chunking does not change the draws; the shards round their weights to
  // nearest. Init always sends FP32.
  proto::Encoding wire = proto::FP32;
  // FIXED16: FL of the pushed gradients, in [0, 30]. Unset: chosen per chunk from its range
  // (WireFractionalBits in server/tensor_codec.h), as the shards do for the weights they send.
  std::optional<int> wire_fl;
  // Connect calls KeepFreedMemoryForReuse() (server/memory_reuse.h), a process-wide malloc
  // setting that makes multi-megabyte pulls and pushes several times faster.
  bool keep_freed_memory = true;
  // TLS to the shards (server/tls.h): the shards' CA, and for mutual TLS this client's
  // certificate and key. Empty: plaintext.
  TlsFiles tls;
};

// One shard's counters (see StatsResponse in proto/parameter_server.proto).
struct ShardStats {
  uint32_t shard = 0;
  uint64_t version = 0;  // updates applied
  uint64_t gradients_applied = 0;
  uint64_t gradients_rejected = 0;
  uint64_t gradients_rejected_nonfinite = 0;
  uint64_t pushes = 0;
  uint64_t pulls = 0;
  uint64_t samples_applied = 0;
  int active_learners = 0;
  double train_loss_recent = 0;
  std::vector<uint64_t> staleness_histogram;  // bucket t: staleness t; the last bucket: >= t
  uint64_t staleness_max = 0;
  double staleness_sum = 0;
  // Ages of gradients in seconds, from the shard's answer to their pull to their arrival.
  uint64_t gradient_age_count = 0;
  double gradient_age_sum = 0;
  double gradient_age_max = 0;
  // Mean staleness over the gradients in the histogram.
  double staleness_mean() const;
  // Mean gradient age in seconds; 0 when none was measured.
  double gradient_age_mean() const;
};

struct PsStats {
  std::vector<ShardStats> shards;
  // Over all shards. Every gradient visits every shard, so per-gradient counts (version,
  // gradients_applied, pushes, pulls, samples_applied, active_learners) are the maximum over
  // shards; rejections add up; the staleness histogram and sum add up (each gradient counted once
  // per shard, so the mean is unchanged) and staleness_max is the maximum; gradient ages
  // likewise.
  ShardStats total;
};

// What this client put on the wire: serialised Push requests sent and Pull responses received,
// summed over shards (the final attempt of each call).
struct WireStats {
  uint64_t pushes = 0;
  uint64_t push_bytes = 0;
  uint64_t streamed_shard_pushes = 0;  // shard pushes answered on a push stream, not a unary call
  uint64_t pulls = 0;
  uint64_t pull_bytes = 0;
  // Pushes after which gRPC still held the gradient a second later (a connection that stopped
  // taking bytes): the client then closed its connections and opened new ones (Push).
  uint64_t connection_resets = 0;
};

// Not thread-safe: call from one thread at a time. Every call blocks the caller until all shards
// have answered (or the call failed); the per-shard RPCs run concurrently.
class PsClient {
 public:
  // Registers with every shard (shard 0 first when an id must be assigned), retrying UNAVAILABLE
  // while shards start. Fails with the shards' status: UNAUTHENTICATED (token), PERMISSION_DENIED
  // (job id), INVALID_ARGUMENT (layout differs from the job's).
  static absl::StatusOr<std::unique_ptr<PsClient>> Connect(const ClientOptions& options);
  ~PsClient();  // does not Leave

  // Offers initial weights (the whole flat buffer) to every shard. OK whether or not these were
  // the weights a shard accepted: the first Init each shard receives wins.
  absl::Status Init(std::span<const float> weights);

  // Fills `weights` (total_elements() floats) with the shards' current weights and remembers the
  // version of each chunk. `clock` is the number of steps this learner has completed; under
  // hardsync and ssp the call waits (up to pull_timeout) until the protocol lets it proceed.
  absl::Status Pull(int64_t clock, std::span<float> weights);

  // Sends `grads` (total_elements() floats, dL/dw) computed on the weights of the last Pull,
  // tagged with that pull's versions. `step` is the clock the gradient was computed at. A
  // FAILED_PRECONDITION means the shards dropped this gradient (for example it belongs to a
  // hardsync step that completed without this learner after it was timed out); pull again from
  // start_clock(). A push may be applied on some shards and refused on others if they disagree.
  // FP32 gradients are sent from `grads` itself, not copied; `grads` is free to overwrite once
  // Push returns (which it does only once gRPC will read no more of it: after a push left queued
  // on a connection to a shard that stopped reading, it shuts that connection down first).
  absl::Status Push(int64_t step, std::span<const float> grads, uint32_t samples, float loss);

  absl::StatusOr<PsStats> Stats();
  // Leaves the job on every shard (hardsync/ssp stop waiting for this learner).
  absl::Status Leave();

  // A shard whose version went backwards between two pulls: it was restarted from a checkpoint
  // and lost the updates between its checkpoint and its crash (as far as this client saw them).
  struct ShardRestart {
    int shard = 0;
    uint64_t version_before = 0;  // the largest version this client had pulled from it
    uint64_t version_after = 0;   // the version it came back with
  };
  // The restarts seen since the last call.
  std::vector<ShardRestart> TakeShardRestarts();

  int learner_id() const { return learner_id_; }
  // The clock to continue from: after Connect, the smallest clock the shards reported (a learner
  // that died in the middle of a push pushes that step again to the shards that missed it); then
  // raised to the largest clock reported by a shard that registered this learner again or
  // refused a push with FAILED_PRECONDITION (e.g. it completed a hardsync step without it).
  int64_t start_clock() const { return start_clock_; }
  uint64_t total_elements() const;
  const proto::ModelLayout& layout() const;
  // Counts successful pushes and pulls only.
  const WireStats& wire_stats() const { return wire_stats_; }
  // Whether each shard's pulls and pushes run on a thread of their own (several shards, and at
  // least 1 MB of the model on the wire per shard), so that sending, receiving and decoding for
  // one shard do not wait for another's on one core.
  bool spreads_shards() const;

 private:
  class Impl;
  explicit PsClient(std::unique_ptr<Impl> impl);
  // Registers with `shards`, raising start_clock_ to the largest clock they report; lowers
  // `*smallest_clock`, if given, to the smallest.
  absl::Status RegisterAll(const std::vector<int>& shards, int64_t* smallest_clock = nullptr);
  class PushLoans;
  // Push, with FP32 payloads sent from `grads` as slices lent to gRPC through `loans`.
  absl::Status PushLending(int64_t step, std::span<const float> grads, uint32_t samples, float loss,
                           PushLoans* loans);
  size_t BytesPerElement() const;  // of the wire encoding
  // Per shard, how many parts of about `part_bytes` its pull or push goes in (1: whole).
  std::vector<int> Parts(uint64_t part_bytes) const;

  std::unique_ptr<Impl> impl_;
  std::vector<uint64_t> shard_version_;  // per shard, the largest chunk version of the last pull
  std::vector<bool> shard_parts_;        // per shard: takes pulls and pushes in parts
  std::vector<ShardRestart> restarts_;
  int learner_id_ = -1;
  int64_t start_clock_ = 0;
  WireStats wire_stats_;
};

}  // namespace orrery::server
