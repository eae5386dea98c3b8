#!/usr/bin/env bash
# Issue 4's accuracy experiment (Gupta et al., ICML 2015, on Fashion-MNIST): examples/models/mlp.yaml
# trained by `orrery train` for 10 epochs in float32 and in 16-bit fixed point with FL = 14, 12,
# 10, 8, under stochastic rounding and under round-to-nearest, plus an ablation with stochastic
# arithmetic and nearest rounding only in the master-weight updates at FL = 10, 8 (11
# single-process runs, two at a time, one thread each; ~8-15 minutes on 2 cores). Writes exp_precision_fixed16_mlp.json
# (figure: final accuracy at FL = 12 stochastic; peer: float32; target ratio 0.99 = within 1%),
# .md (table of accuracy per epoch), .png and .gp (plot). `precision_accuracy.py --help` lists
# the knobs. Usage: bench/precision/run.sh BUILD_DIR RESULTS_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR RESULTS_DIR" >&2; exit 2; }
cd "$(dirname "$0")/../.."
[ -x "$1/cli/orrery" ] || { echo "$0: $1/cli/orrery not found; build it first" >&2; exit 2; }
export EXPERIMENT_COMMAND="bench/precision/run.sh $*"
exec /usr/bin/python3 bench/precision/precision_accuracy.py "$1" "$2" \
  --fls 14,12,10,8 --update-only-fls 10,8 --epochs 10 --batch 64 --lr 0.02 --momentum 0.9 --activation-fl 10 \
  --threads 1 --parallel 2
