#!/usr/bin/env bash
# Runs one test tier (unit | integration | chaos) with node's built-in runner.
# Node 20's runner does not expand globs itself, so the file list is found here.
set -euo pipefail
cd "$(dirname "$0")/.."
tier="${1:?usage: run-tests.sh unit|integration|chaos [node --test options]}"
shift
case "$tier" in
  unit) concurrency=2 ;;
  integration | chaos) concurrency=1 ;;
  *) echo "run-tests: unknown tier $tier" >&2; exit 2 ;;
esac
mapfile -t files < <(find "test/$tier" -name '*.test.ts' | sort)
if [ "${#files[@]}" -eq 0 ]; then
  echo "run-tests: no test files under test/$tier" >&2
  exit 1
fi
exec node --import tsx --test --test-concurrency="$concurrency" "$@" "${files[@]}"
