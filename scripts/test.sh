#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is missing, lint, typecheck, unit tests,
# the deterministic simulation tier (sim/), then integration tests against real SoftHSM2 tokens,
# real etcd members and real sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npm run --silent lint
npm run --silent typecheck
npm run --silent test:unit
npm run --silent test:sim
npm run --silent test:integration
npm run --silent test:chaos
