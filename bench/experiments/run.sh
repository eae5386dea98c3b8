#!/usr/bin/env bash
# The protocol experiments of issue 3, each as `orrery run` jobs of examples/models/mlp.yaml on
# Fashion-MNIST (local processes on 127.0.0.1), results as JSON + markdown + gnuplot PNG:
#   staleness   exp_staleness_distribution: λ = 16, softsync:n for n in 1,2,4,8,16; mean, max
#               and P(τ > 2n) of the applied gradients' staleness (Rudra: mean ≈ n, tail < 1e-4);
#               _b256: the same at batch 256, a longer compute share of each learner's cycle
#   accuracy    exp_accuracy_vs_protocol_l4_b32 / _l8_b16: final test accuracy of hardsync,
#               softsync:1, softsync:λ (none / inverse), async, ssp:2 at μ·λ = 128, one α₀
#   stragglers  exp_stragglers_time_to_target: time to 88% (or the highest common target) with
#               learner 0 of 4 made 3× slower, for hardsync, softsync:4, ssp:2, async
# Unlike the other benchmarks this takes about half an hour on 2 cores (a loaded machine
# stretches it); EXPERIMENTS=staleness,accuracy,stragglers picks a subset. Sizes are shrunk to fit
# that budget; each script's --help lists its knobs. See bench/README.md.
# Usage: [EXPERIMENTS=...] bench/experiments/run.sh BUILD_DIR RESULTS_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR RESULTS_DIR" >&2; exit 2; }
cd "$(dirname "$0")/../.."
BUILD="$1"; RESULTS="$2"
WANT="${EXPERIMENTS:-staleness,accuracy,stragglers}"
export EXPERIMENT_COMMAND="${EXPERIMENTS:+EXPERIMENTS=$EXPERIMENTS }bench/experiments/run.sh $*"
[ -x "$BUILD/cli/orrery" ] || { echo "$0: $BUILD/cli/orrery not found; build it first" >&2; exit 2; }
mkdir -p "$RESULTS"
PY=/usr/bin/python3
HERE=bench/experiments
failed=()
run() {  # run NAME SCRIPT ARGS...: one experiment; a failure is recorded, the others still run
  local name="$1"; shift
  [[ ",$WANT," == *",$name,"* ]] || return 0
  echo "== experiment $name (load average $(cut -d' ' -f1 /proc/loadavg) on $(nproc) cores)" >&2
  local start=$SECONDS
  if "$PY" "$@"; then
    echo "== experiment $name: done in $((SECONDS - start)) s" >&2
  else
    echo "== experiment $name: FAILED after $((SECONDS - start)) s (details.error in its JSON)" >&2
    failed+=("$name")
  fi
}
run staleness "$HERE/staleness_distribution.py" "$BUILD" "$RESULTS" \
  --ns 1,2,4,8,16 --learners 16 --limit-train 60000 --epochs 10 --batch 32 --servers 1 --timeout 600
# The same with 8x the compute per step (batch 256, 2 epochs): whether τ / n follows the share of
# a learner's cycle between its pull and its push (see the markdown's notes).
run staleness "$HERE/staleness_distribution.py" "$BUILD" "$RESULTS" --suffix _b256 \
  --ns 1,2,4,8,16 --learners 16 --limit-train 60000 --epochs 2 --batch 256 --servers 1 --timeout 600
run accuracy "$HERE/accuracy_vs_protocol.py" "$BUILD" "$RESULTS" \
  --pairs 4x32,8x16 --lr 0.02 --momentum 0.9 --epochs 2 --servers 1 --timeout 300
run stragglers "$HERE/stragglers.py" "$BUILD" "$RESULTS" \
  --target 0.88 --epochs 8 --lr 0.02 --momentum 0.9 --rule inverse --batch 32 --factor 3 \
  --decay-epochs 4,6 --decay-factor 0.2 --servers 1 --eval-every 2 --also 0.80,0.84 --timeout 600
if [ ${#failed[@]} -gt 0 ]; then
  echo "$0: failed: ${failed[*]}" >&2
  exit 1
fi
