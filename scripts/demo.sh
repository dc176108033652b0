#!/usr/bin/env bash
# `npm run demo [-- --duration 1m ...]`: installs what the demo needs on a fresh machine, then
# runs `cometkms demo` with the given options.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh demo
exec node bin/cometkms.js demo "$@"
