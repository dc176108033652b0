#!/usr/bin/env bash
# The simulation tier (a few minutes): the whole cluster in one process under the seeded
# scheduler (sim/). First SIM_CI_SEEDS seeds (default 40) of the product as it is, then as many
# with restores and forced lower imports at any moment (--restore-anytime), then
# SIM_CI_BATCH_SEEDS (default 20) with five chains: any invariant violation fails. Then every
# planted bug of --list-bugs: each must be caught (exit 1 with a violation) within its default
# seed budget, or the checker has lost its teeth.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${SIM_CI_SEEDS:-40}"
sim() { node --import tsx sim/main.ts "$@"; }

sim --seeds "$seeds"
sim --seeds "$seeds" --restore-anytime
# Five chains: writes of three or more chains wait together, so group commit runs batches.
sim --seeds "${SIM_CI_BATCH_SEEDS:-20}" --chains 5
passed=1
failed=0
mapfile -t bugs < <(sim --list-bugs)
for bug in "${bugs[@]}"; do
  out="$(mktemp)"
  set +e
  sim --plant-bug "$bug" >"$out" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 1 ] && grep -q 'violated an invariant' "$out"; then
    echo "sim: planted bug $bug caught: $(tail -n 1 "$out")"
    passed=$((passed + 1))
  else
    echo "sim: planted bug $bug NOT caught (exit $rc):" >&2
    cat "$out" >&2
    failed=$((failed + 1))
  fi
  rm -f "$out"
done
echo "sim: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
