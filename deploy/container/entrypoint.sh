#!/bin/sh
# Container entry point: prepares the home on first start (`cometkms init` writes the state
# directory and the privval transport identity; its config.toml there is unused because the
# node runs with --config from /etc/cometkms), then runs cometkms with the given arguments.
# It never creates a chain's sign state: that is the operator's explicit, one-time step
# (`cometkms state init` for a new validator, `cometkms state import` otherwise). So a fresh or
# lost volume gives a node that refuses to sign the chain, never one that signs from nothing.
# COMETKMS_HOME (the node.home override) and COMETKMS_NODE_ID are the same variables cometkms reads.
set -eu
app="${COMETKMS_APP:-/opt/cometkms}"
home="${COMETKMS_HOME:-/var/lib/cometkms}"
# init never overwrites: its config.toml marks a home that is already prepared.
if [ ! -e "$home/config.toml" ]; then
  node "$app/bin/cometkms.js" init --home "$home" --node-id "${COMETKMS_NODE_ID:-cometkms}" >/dev/null
fi
exec node "$app/bin/cometkms.js" "$@"
