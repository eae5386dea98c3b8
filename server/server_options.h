// Everything `orrery server` needs to run one parameter-server shard. Each field documents the
// command-line flag the CLI maps to it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace orrery::server {

struct ServerOptions {
  // --listen: host:port to bind; port 0 lets the OS choose (the chosen one is printed).
  std::string listen_address = "127.0.0.1:0";
  // --shard: this shard's index, 0 <= shard < shards.
  int shard_index = 0;
  // --shards: number of shards S in the job (all shards and learners must agree).
  int num_shards = 1;
  // --job: the job id every request must carry (PERMISSION_DENIED otherwise).
  std::string job_id = "default";
  // --token: the job token every request must carry (UNAUTHENTICATED otherwise); empty disables
  // the check.
  std::string token;
  // --layout: a ModelLayout proto file (binary if it ends in .pb/.binpb, text format otherwise).
  // Empty: the first learner's Register defines the layout and later ones must match it.
  std::string layout_path;
  // --init-weights: raw little-endian float32 file holding the whole model's flat buffer (tensors
  // in layout order). Needs --layout. Empty: the first accepted Init RPC (sent by learners, every
  // learner may send the same seeded weights; the first wins) sets the weights, and pulls wait
  // until then.
  std::string initial_weights_path;
  // --protocol: hardsync | softsync:N | async | ssp:S.
  std::string protocol = "async";
  // --learners: λ, the number of learners the job starts with.
  int learners = 1;
  // --lr: α₀, the base learning rate.
  float lr = 0.01f;
  // --staleness-rule: none (α₀) | inverse (α₀ / max(1, τ) per gradient).
  std::string staleness_rule = "none";
  // --momentum: server-side momentum μ in [0, 1); 0 disables it.
  float momentum = 0.0f;
  // --lr-decay-at-samples S1,S2,...: step decay; the rate is multiplied by --lr-decay-factor
  // (in (0, 1]) once the shard has applied gradients of S1 training samples, again at S2, ...
  std::vector<uint64_t> lr_decay_at_samples;
  float lr_decay_factor = 0.1f;
  // --weights: fp32 | fixed16. fixed16 keeps the master weights in 16-bit fixed point
  // <16 - weights_fl, weights_fl> and rounds them after every update (precision.weights).
  std::string weights = "fp32";
  // --weights-fl: FL of fixed16 weights, in [0, 30]; eps = 2^-FL, range +-2^(15-FL).
  int weights_fl = 12;
  // --weights-rounding: stochastic | nearest (the baseline that loses updates below eps/2).
  std::string weights_rounding = "stochastic";
  // --learner-timeout: seconds of silence after which a learner is dropped from hardsync and ssp
  // accounting (it may register again).
  double learner_timeout_seconds = 60.0;
  // --max-message-bytes: largest request or response the shard accepts or sends.
  int64_t max_message_bytes = 512ll << 20;
  // --checkpoint-dir: where the shard keeps DIR/shard-<i>.ckpt (server/checkpoint.h); empty: no
  // checkpoints. Written once the weights are set, then every --checkpoint-every seconds when
  // the version moved, and at a clean stop.
  std::string checkpoint_dir;
  // --checkpoint-every: seconds between checkpoints.
  double checkpoint_every_seconds = 30.0;
  // --resume: continue from the checkpoint in --checkpoint-dir. A missing file starts fresh; a
  // corrupt or mismatched one is refused (the shard does not start).
  bool resume = false;
  // --tls-cert, --tls-key: serve TLS with this PEM certificate and key; --tls-client-ca: also
  // require client certificates signed by this CA (mutual TLS). All empty: plaintext.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // --metrics-listen: host:port serving Prometheus /metrics (server/shard_metrics.h); port 0 lets
  // the OS choose. Empty: none.
  std::string metrics_listen;
};

}  // namespace orrery::server
