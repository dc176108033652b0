#!/usr/bin/env bash
# Installs everything CometKMS needs on Debian 12: Debian packages (SoftHSM2, etcd, openssl,
# Chromium for the status-page browser test, and pkcs11-spy, libfaketime and gcc for the chaos
# harness) when missing, then the npm packages from the
# lockfile. `install-deps.sh demo` skips what only the tests need (Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
purpose="${1:-test}"

need_apt=()
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ "$purpose" = test ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  # The chaos harness: pkcs11-spy (its HSM-level witness), libfaketime (clock jumps), and a C
  # compiler for its PKCS#11 fault shim.
  [ -e /usr/lib/x86_64-linux-gnu/pkcs11-spy.so ] || need_apt+=(opensc-pkcs11)
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need_apt+=(faketime)
  command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
  [ -e /usr/include/dlfcn.h ] || need_apt+=(libc6-dev)
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
