#!/usr/bin/env bash
# Transport: one learner's pull/push GB/s (4 and 64 MB models, 1 and 2 shards) against iperf3's
# loopback bandwidth (and those of minimal parameter servers over ZeroMQ and over bare gRPC,
# bench/peers/zmq_ps.cc and grpc_ps.cc), and 4 KB
# pushes/s with 1, 4 and 16 learner processes against raw TCP, all measured in the same run
# against real `orrery server` processes. Writes transport_*.json.
# Usage: bench/transport/run.sh BUILD_DIR RESULTS_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR RESULTS_DIR" >&2; exit 2; }
cd "$(dirname "$0")/../.."
command -v iperf3 >/dev/null || { echo "bench/transport: iperf3 is missing (make bench installs it)" >&2; exit 3; }
# The ZeroMQ parameter-server peer (bench/peers/zmq_ps.cc), built here: only `make bench` installs
# libzmq3-dev, so the project's build does not need it.
zmq=()
if [ -f /usr/include/zmq.h ]; then
  mkdir -p "$1/bench/peers"
  c++ -O2 -std=c++20 -Wall -Wextra bench/peers/zmq_ps.cc -lzmq -o "$1/bench/peers/zmq_ps"
  zmq=(--zmq_ps="$1/bench/peers/zmq_ps")
else
  echo "bench/transport: libzmq3-dev is missing (make bench installs it); no ZeroMQ peer" >&2
fi
# Benchmarks are outside the default build; this builds (or finds up to date) the binaries.
cmake --build "$1" --target bench_transport grpc_ps >&2
exec "$1/bench/transport/bench_transport" --orrery="$1/cli/orrery" --results_dir="$2" "${zmq[@]}" \
  --grpc_ps="$1/bench/transport/grpc_ps" \
  --command="bench/transport/run.sh BUILD RESULTS (make bench BENCH=transport)"
