#!/usr/bin/env bash
# Learner training throughput (images/s) of mlp.yaml and cnn.yaml at batch 64, 1 and 2 threads,
# against PyTorch (Debian's python3-torch) training the same networks. See bench/README.md.
# Usage: bench/learner/run.sh BUILD_DIR RESULTS_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR RESULTS_DIR" >&2; exit 2; }
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 bench/learner/learner_bench.py "$1" "$2" \
  --models mlp,cnn --threads 1,2 --batch 64 --images mlp=30000,cnn=12800
