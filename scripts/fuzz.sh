#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (ASan + UBSan) and runs each for a bounded time,
# starting from fuzz/corpus/<target> and fuzz/regressions. Fails on any crash, leak, sanitizer
# report or hang (an input taking over 10 s). Findings land in BUILD/findings/.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; `make fuzz FUZZ_SECONDS=N`)
#        scripts/fuzz.sh --merge [TARGET...]   for each target (default all): the smallest set of
#          inputs covering all that fuzz/corpus/<target> and BUILD/corpus/<target> cover
#          (libFuzzer's -set_cover_merge; its choice varies between runs) replaces the hash-named
#          files of fuzz/corpus/<target>; named ones (seeds, kills_*) stay. Commit the result:
#          `make test` replays fuzz/corpus through every target (tests/fuzz_replay).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-fuzz
TARGETS="job_spec model_spec tensor_decode pull_decode push_decode checkpoint shard_ops idx"
scripts/install-deps.sh fuzz
[ -f "$BUILD/build.ninja" ] || cmake -S fuzz -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER=clang++
cmake --build "$BUILD"
if [ "${1:-}" = "--merge" ]; then
  shift
  for target in ${*:-$TARGETS}; do
    [[ " $TARGETS " == *" $target "* ]] || { echo "fuzz: no target $target (one of: $TARGETS)" >&2; exit 2; }
    kept=$(mktemp -d)
    mkdir -p "$BUILD/corpus/$target"
    "$BUILD/fuzz_$target" -set_cover_merge=1 -timeout=10 -rss_limit_mb=2048 "$kept" \
      "fuzz/corpus/$target" "$BUILD/corpus/$target" > "$BUILD/$target.merge.log" 2>&1
    find "fuzz/corpus/$target" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9a-f]{40}' -delete
    cp "$kept"/* "fuzz/corpus/$target/" 2>/dev/null || true
    for named in "fuzz/corpus/$target"/*; do  # the merge's copy of a named input goes
      [[ "$(basename "$named")" =~ ^[0-9a-f]{40}$ ]] || rm -f "fuzz/corpus/$target/$(sha1sum < "$named" | cut -c1-40)"
    done
    rm -rf "$kept"
    echo "fuzz: $target keeps $(ls "fuzz/corpus/$target" | wc -l) inputs"
  done
  exit 0
fi
SECONDS_PER_TARGET="${1:-60}"
mkdir -p "$BUILD/findings"
status=0
for target in $TARGETS; do
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
