#!/usr/bin/env bash
# Checks that the fuzz inputs `make test` replays still catch the bugs they were kept for: each
# mutant below breaks one rule of the shard (a protocol's gate, an update's arithmetic, the
# learner timeout, checkpoints, the shards' agreement); the script applies it to a copy of the
# source file, rebuilds replay_shard_ops in BUILD (default build/), runs it on
# fuzz/corpus/shard_ops/kills_<name> alone, which must fail, and puts the file back. A mutant that
# no longer applies (the code moved) is reported, not skipped silently. Not part of `make test`
# (it rebuilds once per mutant). Usage: scripts/fuzz_mutants.sh [BUILD]
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
failed=0
mutant() {  # name file old new
  local name=$1 file=$2 old=$3 new=$4 backup
  backup=$(mktemp)
  cp "$file" "$backup"
  if ! python3 - "$file" "$old" "$new" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(1)
open(path, 'w').write(text.replace(old, new))
PY
  then
    echo "mutant $name: no longer applies to $file; update it"; failed=1; rm -f "$backup"; return
  fi
  if ! cmake --build "$BUILD" --target replay_shard_ops >/dev/null 2>&1; then
    echo "mutant $name: does not build"; failed=1
  elif ("$BUILD/tests/fuzz_replay/replay_shard_ops" "fuzz/corpus/shard_ops/kills_$name"; exit $?) >/dev/null 2>&1; then
    echo "mutant $name: NOT caught by kills_$name"; failed=1
  else
    echo "mutant $name: caught"
  fi
  cp "$backup" "$file"
  rm -f "$backup"
}
mutant ssp_plus1 server/sync_protocol.cc \
  "return clock - MinClock() <= spec_.staleness_bound;" "return clock - MinClock() <= spec_.staleness_bound + 1;"
mutant hardsync_any server/sync_protocol.cc \
  "    if (l.active && l.clock <= step_) return false;" "    if (l.active && l.clock < step_) return false;"
mutant hardsync_pull_early server/sync_protocol.cc "      return step_ >= clock;" "      return step_ + 1 >= clock;"
mutant softsync_smaller server/sync_protocol.cc \
  "per_update_ = std::max(1, num_learners_ / std::max(1, spec_.softsync_n));" \
  "per_update_ = std::max(1, num_learners_ / std::max(1, spec_.softsync_n) - 1);"
mutant expire_half server/sync_protocol.cc \
  "if (l.active && now - l.last_seen > timeout) {" "if (l.active && now - l.last_seen > timeout / 2) {"
mutant load_drops_pending server/sync_protocol.cc "  pending_ = s.pending;" "  pending_ = 0;"
mutant inverse_plus1 server/lr_rule.cc "std::max<uint64_t>(1, staleness)" "std::max<uint64_t>(1, staleness + 1)"
mutant mean_minus1 server/shard_store.cc \
  "const float inv = 1.0f / static_cast<float>(std::max(1, count));" \
  "const float inv = 1.0f / static_cast<float>(std::max(1, count - 1));"
mutant momentum_mean server/shard_store.cc "v[i] = mu * v[i] + acc[i] * inv;" "v[i] = mu * v[i] + acc[i];"
mutant future_base server/parameter_shard.cc \
  "if (st.ok() && base > store_->version()) {" "if (st.ok() && base > store_->version() + 1) {"
mutant samples_per_chunk server/parameter_shard.cc \
  "    pending_samples_ += request.samples();" "    pending_samples_ += request.samples() * gradient->size();"
mutant fixed_off_grid server/fixed_master_weights.cc "  CHECK(st.ok()) << st;
}" "  CHECK(st.ok()) << st;
  if (weights.size() > 3 && rounding == quant::Rounding::kStochastic) weights[3] += 2 * format_.inverse_scale();
}"
cmake --build "$BUILD" --target replay_shard_ops >/dev/null 2>&1
exit $failed
