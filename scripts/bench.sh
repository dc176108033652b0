#!/usr/bin/env bash
# `npm run bench [-- suite ...]`: installs what the benchmarks need on a fresh machine (the same
# as the demo: SoftHSM2, etcd, openssl, the npm packages), builds dist/ from src/ (the benchmarks
# start real `cometkms` processes), then runs bench/run.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh demo
npm run --silent build
exec node --import tsx bench/run.ts "$@"
