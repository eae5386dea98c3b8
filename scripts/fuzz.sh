#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (ASan + UBSan) and runs each for a bounded time,
# starting from fuzz/corpus/<target> and fuzz/regressions. Fails on any crash, leak, sanitizer
# report or hang (an input taking over 10 s). Findings land in BUILD/findings/.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; `make fuzz FUZZ_SECONDS=N`)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-60}"
BUILD=build-fuzz
scripts/install-deps.sh fuzz
[ -f "$BUILD/build.ninja" ] || cmake -S fuzz -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER=clang++
cmake --build "$BUILD"
mkdir -p "$BUILD/findings"
status=0
for target in job_spec model_spec tensor_decode pull_decode push_decode checkpoint shard_ops idx; do
  work="$BUILD/corpus/$target"
  mkdir -p "$work"
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s"
  if ! "$BUILD/fuzz_$target" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$BUILD/findings/$target-" \
       "$work" "fuzz/corpus/$target" fuzz/regressions > "$BUILD/$target.log" 2>&1; then
    echo "fuzz: $target FAILED; see $BUILD/$target.log and $BUILD/findings/" >&2
    grep -E "ERROR|SUMMARY" "$BUILD/$target.log" | head -5 >&2 || true
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$BUILD/$target.log" | tr '\n' ' '
    echo
  fi
done
exit $status
