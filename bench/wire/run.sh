#!/usr/bin/env bash
# Issue 4, precision.wire: the same small `orrery run` job (mlp.yaml, async, 2 learners, 2 shards)
# with fp32 and with fixed16 wire encoding, alternating, five times each (~1-2 minutes on 2 cores).
# Writes exp_wire_fixed16_vs_fp32.json (figure: fixed16 images/s; peer: fp32 images/s of the same
# run; details: bytes per push and per pull of both, test accuracy) and .md.
# Usage: bench/wire/run.sh BUILD_DIR RESULTS_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR RESULTS_DIR" >&2; exit 2; }
cd "$(dirname "$0")/../.."
[ -x "$1/cli/orrery" ] || { echo "$0: $1/cli/orrery not found; build it first" >&2; exit 2; }
export EXPERIMENT_COMMAND="bench/wire/run.sh $*"
exec /usr/bin/python3 bench/wire/wire_precision.py "$1" "$2" --repeats 5
