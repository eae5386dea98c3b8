#!/usr/bin/env bash
# Runs the benchmarks, then prints the table of every result in bench/results/*.json.
# Usage: scripts/bench.sh BUILD_DIR [NAME]
#   A benchmark is an executable bench/<name>/run.sh; it is run from the repository root as
#   `bench/<name>/run.sh BUILD_DIR RESULTS_DIR` (both absolute) and writes its JSON results into
#   RESULTS_DIR. NAME (from `make bench BENCH=...`) runs only benchmarks whose <name> contains it.
#   Exit status: non-zero if any benchmark failed or NAME matched none; the table prints anyway.
set -uo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 BUILD_DIR [NAME]" >&2; exit 2; }
cd "$(dirname "$0")/.."
BUILD="$(cd "$1" 2>/dev/null && pwd)" || { echo "bench.sh: build directory '$1' not found" >&2; exit 2; }
FILTER="${2:-}"
RESULTS="$PWD/bench/results"
mkdir -p "$RESULTS"

ran=0; failed=()
for run in bench/*/run.sh; do
  [ -x "$run" ] || continue
  name="$(basename "$(dirname "$run")")"
  [ -n "$FILTER" ] && [[ "$name" != *"$FILTER"* ]] && continue
  ran=$((ran + 1))
  load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
  echo "== bench $name (load average $load on $(nproc) cores)" >&2
  start=$SECONDS
  if "$run" "$BUILD" "$RESULTS"; then
    echo "== bench $name: done in $((SECONDS - start)) s" >&2
  else
    echo "== bench $name: FAILED (exit $?) after $((SECONDS - start)) s" >&2
    failed+=("$name")
  fi
done

if [ "$ran" -eq 0 ]; then
  echo "bench.sh: no benchmark matches '${FILTER}' (have: $(for r in bench/*/run.sh; do [ -x "$r" ] && basename "$(dirname "$r")"; done | tr '\n' ' '))" >&2
fi
echo
/usr/bin/python3 bench/tabulate.py "$RESULTS"
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench.sh: failed: ${failed[*]}" >&2
  exit 1
fi
[ "$ran" -gt 0 ]
