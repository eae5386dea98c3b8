#!/usr/bin/env bash
# quant/: float -> fixed16 stochastic conversion against memcpy, and the fixed16 GEMM against
# oneDNN's f32 matmul (512^3 and the MLP's shapes), in the same run. Writes quant_*.json.
# Usage: bench/quant/run.sh BUILD_DIR RESULTS_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR RESULTS_DIR" >&2; exit 2; }
cd "$(dirname "$0")/../.."
# Benchmarks are outside the default build; this builds (or finds up to date) the binary.
cmake --build "$1" --target bench_quant >&2
exec "$1/bench/quant/bench_quant" --results_dir="$2" --threads=1
