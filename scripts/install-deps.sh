#!/usr/bin/env bash
# Installs everything CometKMS needs on Debian 12: Debian packages (SoftHSM2, etcd, openssl, the
# compiler node-gyp uses, and for the tests Chromium, for the status-page browser test,
# Prometheus, for promtool, and pkcs11-spy, libfaketime and gcc, for the chaos harness) when
# missing, then the npm packages from the lockfile. `install-deps.sh demo` skips what only the
# tests need.
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
need_promtool=no
if [ "$purpose" = test ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v promtool >/dev/null 2>&1 || need_promtool=yes
  # The chaos harness: pkcs11-spy (its HSM-level witness), libfaketime (clock jumps), and a C
  # compiler for its PKCS#11 fault shim.
  [ -e /usr/lib/x86_64-linux-gnu/pkcs11-spy.so ] || need_apt+=(opensc-pkcs11)
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need_apt+=(faketime)
  command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
  [ -e /usr/include/dlfcn.h ] || need_apt+=(libc6-dev)
fi
if [ "${#need_apt[@]}" -gt 0 ] || [ "$need_promtool" = yes ]; then
  if [ "$(id -u)" -ne 0 ]; then
    missing="${need_apt[*]}"
    [ "$need_promtool" = yes ] && missing="$missing prometheus"
    echo "install-deps: missing Debian packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
    exit 1
  fi
  apt-get update -qq
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# promtool (checks and unit-tests deploy/prometheus/alerts.yml) comes only in Debian's
# `prometheus` package, whose install starts a Prometheus server on :9090 and enables it at boot.
# The tests need no server: a policy-rc.d that denies every start (honoured by invoke-rc.d and
# deb-systemd-invoke) keeps it from starting, unless the machine already has a policy of its
# own (then a server it let start is stopped below), and the service is disabled for later boots.
if [ "$need_promtool" = yes ]; then
  echo "install-deps: apt-get install prometheus (for promtool; its server is not started)"
  policy=/usr/sbin/policy-rc.d
  own_policy=no
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=yes
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null || status=$?
  if [ "$own_policy" = yes ]; then
    rm -f "$policy"
    trap - EXIT
  fi
  [ "$status" -eq 0 ] || exit "$status"
  # `systemctl disable` works without a running systemd too, and disables the SysV links.
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    if [ -x /etc/init.d/prometheus ]; then /etc/init.d/prometheus stop >/dev/null 2>&1 || true; fi
    systemctl disable prometheus.service >/dev/null 2>&1 || update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi

# The etcd-server package starts a system etcd on 127.0.0.1:2379; our tests and demo start their
# own members on random ports and never touch it.

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund
fi
