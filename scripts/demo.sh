#!/usr/bin/env bash
# `npm run demo [-- --duration 1m ...]`: installs what the demo needs on a fresh machine, builds
# dist/ from src/ (the demo's nodes run the compiled CLI), then runs `cometkms demo` with the
# given options.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh demo
npm run --silent build
exec node bin/cometkms.js demo "$@"
