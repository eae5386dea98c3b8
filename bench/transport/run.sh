#!/usr/bin/env bash
# Transport: one learner's pull/push GB/s (4 and 64 MB models, 1 and 2 shards) against iperf3's
# loopback bandwidth, and 4 KB pushes/s with 1, 4 and 16 learner processes against raw TCP, all
# measured in the same run against real `orrery server` processes. Writes transport_*.json.
# Usage: bench/transport/run.sh BUILD_DIR RESULTS_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR RESULTS_DIR" >&2; exit 2; }
cd "$(dirname "$0")/../.."
command -v iperf3 >/dev/null || { echo "bench/transport: iperf3 is missing (make bench installs it)" >&2; exit 3; }
exec "$1/bench/transport/bench_transport" --orrery="$1/cli/orrery" --results_dir="$2" \
  --command="bench/transport/run.sh BUILD RESULTS (make bench BENCH=transport)"
