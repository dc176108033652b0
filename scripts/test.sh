#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is missing, lint, typecheck, unit tests,
# the deterministic simulation tier (sim/), then integration and chaos tests against real SoftHSM2
# tokens, real etcd members, real sockets and real `cometkms` processes. Those run the compiled
# dist/, which run-tests.sh rebuilds from src/ before each of these tiers: the tests never
# exercise a stale build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npm run --silent lint
npm run --silent typecheck
npm run --silent test:unit
npm run --silent test:sim
npm run --silent test:integration
npm run --silent test:chaos
