#!/usr/bin/env bash
# Makes the TLS material of one CometKMS cluster with openssl: a private CA and one certificate
# per KMS host, all ECDSA P-256 / SHA-256.
#
# One node certificate serves every TLS role of its host, because its extendedKeyUsage is
# serverAuth AND clientAuth:
#   CometKMS  [cluster] tls_ca_file / tls_cert_file / tls_key_file   (etcd client + forwarding mTLS)
#   etcd      --trusted-ca-file       --cert-file      --key-file       (client-facing server)
#             --peer-trusted-ca-file  --peer-cert-file --peer-key-file  (Raft peers, both directions)
#
# Usage:
#   make-certs.sh --out DIR --ca-name NAME --node ID:IP[,IP...][:DNS[,DNS...]] [--node ...]
#                 [--days N] [--reuse-ca] [--force]
#
#   --node kms-1:10.0.0.1,127.0.0.1:kms-1.example.com   IPs and DNS names go into subjectAltName;
#          IPv6 addresses go in brackets: kms-1:[fd00::1],10.0.0.1. CN = ID.
#   --days N       validity of every certificate issued now (default 825)
#   --reuse-ca     sign with the CA already in DIR (adding or renewing nodes); --ca-name is then unused
#   --force        overwrite files that already exist (without --reuse-ca: a NEW CA, which
#                  invalidates every certificate the old one issued)
#
# Output (keys are 0600, in 0700 directories; nothing is written if any check fails):
#   DIR/ca.pem  DIR/ca-key.pem          the CA; keep ca-key.pem offline, never on a KMS host
#   DIR/ID/ca.pem                       copy of the CA certificate
#   DIR/ID/node.pem DIR/ID/node-key.pem node certificate and key of host ID
# Copy DIR/ID/* to /etc/cometkms/tls/ on host ID (see deploy/README.md for owners and modes).
set -euo pipefail
umask 077

die() {
  echo "make-certs.sh: $*" >&2
  exit 1
}

out=''
ca_name=''
days=825
reuse_ca=0
force=0
nodes=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="${2:-}"; shift 2 || die '--out needs a directory' ;;
    --ca-name) ca_name="${2:-}"; shift 2 || die '--ca-name needs a name' ;;
    --node) nodes+=("${2:-}"); shift 2 || die '--node needs ID:IP[,IP...][:DNS,...]' ;;
    --days) days="${2:-}"; shift 2 || die '--days needs a number' ;;
    --reuse-ca) reuse_ca=1; shift ;;
    --force) force=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument \"$1\" (see --help)" ;;
  esac
done

[[ -n "$out" ]] || die '--out DIR is required'
[[ ${#nodes[@]} -gt 0 ]] || die 'at least one --node ID:IP[,IP...][:DNS,...] is required'
[[ "$days" =~ ^[1-9][0-9]{0,4}$ ]] || die "--days must be a positive number of days, got \"$days\""
if [[ $reuse_ca -eq 0 ]]; then
  [[ -n "$ca_name" ]] || die '--ca-name NAME is required (or --reuse-ca to sign with the CA in DIR)'
  # The name goes into a -subj argument, where / and = are separators.
  [[ "$ca_name" =~ ^[A-Za-z0-9][A-Za-z0-9\ ._-]*$ ]] || die "--ca-name may hold letters, digits, space, . _ -; got \"$ca_name\""
fi
command -v openssl >/dev/null || die 'openssl not found'

# Parsed nodes: parallel arrays of id and subjectAltName value.
ids=()
sans=()
ip_re='^([0-9]{1,3}\.){3}[0-9]{1,3}$'
ip6_re='^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$'
dns_re='^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$'
for spec in "${nodes[@]}"; do
  [[ "$spec" == *:* ]] || die "--node \"$spec\": expected ID:IP[,IP...][:DNS,...]"
  id="${spec%%:*}"
  rest="${spec#*:}"
  [[ "$id" =~ ^[A-Za-z0-9._-]+$ ]] || die "--node \"$spec\": node id must be [A-Za-z0-9._-]+ (as node.id in config.toml)"
  for seen in "${ids[@]+"${ids[@]}"}"; do
    [[ "$seen" != "$id" ]] || die "--node: node id \"$id\" given twice"
  done
  # Colons inside [IPv6] are hidden as '%' so that ':' only separates the IP and DNS lists.
  hidden="$rest"
  while [[ "$hidden" =~ ^(.*\[[^]:]*):(.*)$ ]]; do hidden="${BASH_REMATCH[1]}%${BASH_REMATCH[2]}"; done
  IFS=':' read -r -a parts <<<"$hidden"
  [[ ${#parts[@]} -le 2 ]] || die "--node \"$spec\": too many ':' (write IPv6 addresses in brackets)"
  san=''
  IFS=',' read -r -a ips <<<"${parts[0]:-}"
  for ip in "${ips[@]+"${ips[@]}"}"; do
    [[ -n "$ip" ]] || continue
    if [[ "$ip" =~ ^\[(.*)\]$ ]]; then
      ip="${BASH_REMATCH[1]//%/:}"
      [[ "$ip" =~ $ip6_re ]] || die "--node \"$spec\": \"$ip\" is not an IPv6 address"
    else
      [[ "$ip" =~ $ip_re ]] || die "--node \"$spec\": \"$ip\" is not an IPv4 address (IPv6 goes in brackets)"
      IFS='.' read -r -a octets <<<"$ip"
      for o in "${octets[@]}"; do
        ((10#$o <= 255)) || die "--node \"$spec\": \"$ip\" is not an IPv4 address"
      done
    fi
    san+="${san:+,}IP:$ip"
  done
  IFS=',' read -r -a names <<<"${parts[1]:-}"
  for name in "${names[@]+"${names[@]}"}"; do
    [[ -n "$name" ]] || continue
    [[ "$name" =~ $dns_re ]] || die "--node \"$spec\": \"$name\" is not a DNS name"
    san+="${san:+,}DNS:$name"
  done
  [[ -n "$san" ]] || die "--node \"$spec\": give at least one IP or DNS name"
  ids+=("$id")
  sans+=("$san")
done

# Every refusal happens before anything is written.
ca_cert="$out/ca.pem"
ca_key="$out/ca-key.pem"
if [[ $reuse_ca -eq 1 ]]; then
  [[ -f "$ca_cert" && -f "$ca_key" ]] || die "--reuse-ca: no CA in $out (expected ca.pem and ca-key.pem)"
elif [[ -e "$ca_cert" || -e "$ca_key" ]] && [[ $force -eq 0 ]]; then
  die "a CA already exists in $out: use --reuse-ca to issue node certificates with it, or --force to replace it (every certificate it issued stops being trusted)"
fi
if [[ $force -eq 0 ]]; then
  for id in "${ids[@]}"; do
    for f in node.pem node-key.pem ca.pem; do
      [[ ! -e "$out/$id/$f" ]] || die "$out/$id/$f exists: use --force to replace it"
    done
  done
fi

mkdir -p "$out"
chmod 700 "$out"
work="$(mktemp -d "$out/.make-certs.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# An explicit config, so that no system openssl.cnf section adds or changes extensions.
cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[node_ext]
basicConstraints = critical,CA:FALSE
# ECDHE key exchange: the key only signs, so digitalSignature is the whole key usage.
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = ${ENV::NODE_SAN}
EOF

new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# 16 random bytes, top bit cleared: a positive serial that stays within RFC 5280's 20 octets.
serial() {
  local hex
  hex="$(openssl rand -hex 16)"
  printf '0x%x%s' "$((0x${hex:0:1} & 7))" "${hex:1}"
}

if [[ $reuse_ca -eq 0 ]]; then
  new_key "$work/ca-key.pem"
  NODE_SAN='' openssl req -x509 -new -config "$work/openssl.cnf" -extensions ca_ext \
    -key "$work/ca-key.pem" -sha256 -days "$days" -set_serial "$(serial)" \
    -subj "/CN=$ca_name" -out "$work/ca.pem"
  mv -f "$work/ca-key.pem" "$ca_key"
  chmod 600 "$ca_key"
  mv -f "$work/ca.pem" "$ca_cert"
  chmod 644 "$ca_cert"
  echo "CA \"$ca_name\": $ca_cert"
fi

for i in "${!ids[@]}"; do
  id="${ids[$i]}"
  new_key "$work/node-key.pem"
  NODE_SAN='' openssl req -new -config "$work/openssl.cnf" -key "$work/node-key.pem" \
    -subj "/CN=$id" -out "$work/node.csr"
  NODE_SAN="${sans[$i]}" openssl x509 -req -in "$work/node.csr" -CA "$ca_cert" -CAkey "$ca_key" \
    -set_serial "$(serial)" -sha256 -days "$days" \
    -extfile "$work/openssl.cnf" -extensions node_ext -out "$work/node.pem" 2>/dev/null
  openssl verify -CAfile "$ca_cert" "$work/node.pem" >/dev/null || die "$id: issued certificate does not verify"
  mkdir -p "$out/$id"
  chmod 700 "$out/$id"
  mv -f "$work/node-key.pem" "$out/$id/node-key.pem"
  chmod 600 "$out/$id/node-key.pem"
  mv -f "$work/node.pem" "$out/$id/node.pem"
  chmod 644 "$out/$id/node.pem"
  cp -f "$ca_cert" "$out/$id/ca.pem"
  chmod 644 "$out/$id/ca.pem"
  echo "node $id (${sans[$i]}): $out/$id/node.pem"
done
