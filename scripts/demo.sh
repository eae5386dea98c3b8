#!/usr/bin/env bash
# The main job: a local multi-process training run on Fashion-MNIST (2 servers, 4 learners).
set -euo pipefail
BUILD="${1:-build}"
cd "$(dirname "$0")/.."
mkdir -p "$BUILD/demo"
exec "$BUILD/cli/orrery" run examples/jobs/fashion_mnist.yaml --metrics-out "$BUILD/demo/metrics.json" --log-dir "$BUILD/demo/logs"
