#!/usr/bin/env bash
# Installs, idempotently, every Debian 12 package Orrery builds, tests or demos with.
# Usage: scripts/install-deps.sh [base|bench|fuzz|slurm|all]   (default: base)
# `slurm`: a single-node Slurm (controller, node daemon, munge, client tools) for the slurm
# backend's tests, which start and stop their own daemons; nothing is started or enabled here.
set -euo pipefail

BASE_PKGS=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libdnnl-dev ocl-icd-opencl-dev
  libopenmpi-dev openmpi-bin
  libboost-system-dev libboost-filesystem-dev
  libgoogle-glog-dev libgtest-dev libgmock-dev libbenchmark-dev
  zlib1g-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libsqlite3-dev prometheus-cpp-dev
  dataset-fashion-mnist openssl
)
BENCH_PKGS=( python3-torch python3-numpy iperf3 gnuplot-nox libzmq3-dev )
SLURM_PKGS=( slurmctld slurmd munge slurm-client )
FUZZ_PKGS=( clang libclang-rt-14-dev )

want=("${BASE_PKGS[@]}")
case "${1:-base}" in
  base) ;;
  bench) want+=("${BENCH_PKGS[@]}") ;;
  fuzz) want+=("${FUZZ_PKGS[@]}") ;;
  slurm) want+=("${SLURM_PKGS[@]}") ;;
  all) want+=("${BENCH_PKGS[@]}" "${FUZZ_PKGS[@]}" "${SLURM_PKGS[@]}") ;;
  *) echo "install-deps.sh: unknown set '$1' (expected base, bench, fuzz, slurm or all)" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
