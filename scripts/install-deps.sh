#!/usr/bin/env bash
# Installs everything CometKMS needs on Debian 12: Debian packages (SoftHSM2, etcd, openssl, the
# compiler node-gyp uses, and Chromium for the status-page browser test) when missing, then the
# npm packages from the lockfile. `install-deps.sh demo` skips what only the tests need (Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
purpose="${1:-test}"

need_apt=()
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# npm ci compiles native code with node-gyp (pkcs11js, the flock helper in native/).
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ "$purpose" = test ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages: ${need_apt[*]} (run as root, or: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The etcd-server package starts a system etcd on 127.0.0.1:2379; our tests and demo start their
# own members on random ports and never touch it.

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund
fi
