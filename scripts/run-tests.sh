#!/usr/bin/env bash
# Runs one test tier (unit | integration | chaos) with node's built-in runner:
#   run-tests.sh TIER [node --test options] [test files of that tier]
# Without files, every *.test.ts under test/TIER runs (node 20's runner does not expand globs
# itself, so the list is found here).
#
# Integration and chaos tests start real `cometkms` processes, which run the compiled dist/:
# those tiers always rebuild it first, so a stale build can never be what they exercise.
set -euo pipefail
cd "$(dirname "$0")/.."
tier="${1:?usage: run-tests.sh unit|integration|chaos [node --test options] [files...]}"
shift
case "$tier" in
  unit) concurrency=2 ;;
  integration | chaos) concurrency=1 ;;
  *) echo "run-tests: unknown tier $tier" >&2; exit 2 ;;
esac
options=()
files=()
for arg in "$@"; do
  case "$arg" in
    *.test.ts) files+=("$arg") ;;
    *) options+=("$arg") ;;
  esac
done
if [ "${#files[@]}" -eq 0 ]; then
  mapfile -t files < <(find "test/$tier" -name '*.test.ts' | sort)
fi
if [ "${#files[@]}" -eq 0 ]; then
  echo "run-tests: no test files under test/$tier" >&2
  exit 1
fi
if [ "$tier" != unit ]; then
  npm run --silent build
fi
exec node --import tsx --test --test-concurrency="$concurrency" ${options[@]+"${options[@]}"} "${files[@]}"
