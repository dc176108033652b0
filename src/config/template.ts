/**
 * The commented config.toml that `cometkms init` writes. It shows every key of the contract
 * (ARCHITECTURE.md §5); optional ones are commented out with their default or an example.
 * Lines that are commented-out keys start with `# ` directly followed by the key or table
 * header, so tests can uncomment them all and check that the result still parses.
 */
import type { KeyType, ProtocolVersion } from '../cometbft/types.ts';
import { CONFIG_DEFAULTS } from './load.ts';

/** What `init` fills in; without a chain, a placeholder chain the operator must edit is written. */
export interface TemplateOptions {
  nodeId: string;
  /** absolute path of the home directory */
  home: string;
  /** the admin bearer token file `init` created; absent: the key is left commented out */
  adminTokenFile?: string;
  /** admin API host:port (default CONFIG_DEFAULTS.adminListen) */
  adminListen?: string;
  /** the [hsm] section's values that differ from the template's examples */
  hsm?: { module?: string; tokenLabel?: string; pinFile?: string };
  /** a [cluster] section to write uncommented; absent: the section is shown commented out */
  cluster?: {
    etcdEndpoints: string[];
    forwardListen: string;
    forwardAdvertise: string;
    tlsCaFile: string;
    tlsCertFile: string;
    tlsKeyFile: string;
  };
  chain?: {
    id: string;
    keyLabel: string;
    keyType: KeyType;
    protocol: ProtocolVersion;
    validator: string;
  };
}

/** A TOML basic string: JSON escapes are valid TOML escapes, except that DEL must be escaped too. */
function str(s: string): string {
  return JSON.stringify(s).replace(/\u007f/g, '\\u007F');
}

/** Renders the commented config.toml for `opts`. */
export function configTemplate(opts: TemplateOptions): string {
  const chain = opts.chain;
  const chainNote = chain
    ? ''
    : '# EDIT BEFORE START: this chain is a placeholder. Set the chain id, the key label and the\n' +
      '# validator address of your node (its priv_validator_laddr).\n';
  const c: NonNullable<TemplateOptions['chain']> = chain ?? {
    id: 'example-chain-1',
    keyLabel: 'validator-key',
    keyType: 'ed25519',
    protocol: 'v0.38',
    validator: 'tcp://127.0.0.1:26659',
  };
  const d = CONFIG_DEFAULTS;
  const hsm = opts.hsm ?? {};
  const cl = opts.cluster;
  // A key of the [cluster] section: set when `cl` is given, else commented out with an example.
  const clusterKey = (key: string, value: string | undefined, example: string): string =>
    value === undefined ? `# ${key} = ${example}` : `${key} = ${value}`;
  return `# CometKMS configuration (TOML). Unknown keys are errors. Relative paths are resolved
# against the directory of this file. Secrets are never written here, only the files that hold
# them (chmod 600). Environment overrides: COMETKMS_NODE_ID (node.id), COMETKMS_HOME (node.home),
# COMETKMS_ADMIN_LISTEN (admin.listen); COMETKMS_HSM_PIN holds the PIN when hsm.pin_file is unset.

[node]
# Unique within the cluster: letters, digits, '.', '_', '-'.
id = ${str(opts.nodeId)}
# State files, the lock and the privval transport identity live here.
home = ${str(opts.home)}

[hsm]
# The PKCS#11 module of your HSM.
module = ${str(hsm.module ?? '/usr/lib/softhsm/libsofthsm2.so')}
# A profile file in hsm/ (mechanisms and quirks of the HSM).
profile = ${str(d.hsmProfile)}
token_label = ${str(hsm.tokenLabel ?? 'cometkms')}
# File holding the user PIN; without it the PIN is read from COMETKMS_HSM_PIN.
${hsm.pinFile === undefined ? '# pin_file = "/etc/cometkms/hsm.pin"' : `pin_file = ${str(hsm.pinFile)}`}

[admin]
# Admin API (health, status, metrics, leadership transfer), host:port.
listen = ${str(opts.adminListen ?? d.adminListen)}
# File holding the bearer token required on every non-public route.
${opts.adminTokenFile === undefined ? '# token_file = "/etc/cometkms/admin.token"' : `token_file = ${str(opts.adminTokenFile)}`}
# Routes that need no token.
# public_routes = ${JSON.stringify(d.adminPublicRoutes)}
# Serve the admin API over TLS (both or neither).
# tls_cert_file = "/etc/cometkms/tls/admin.pem"
# tls_key_file = "/etc/cometkms/tls/admin-key.pem"

# Cluster mode: leave this section out to run a single node.
${cl === undefined ? '# [cluster]' : '[cluster]'}
${clusterKey('etcd_endpoints', cl && `[${cl.etcdEndpoints.map(str).join(', ')}]`, '["https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"]')}
# lease_ttl_s = ${d.leaseTtlS}
# etcd_prefix = ${str(d.etcdPrefix)}
# etcd_call_timeout_ms = ${d.etcdCallTimeoutMs}
# etcd_username = "cometkms"
# etcd_password_file = "/etc/cometkms/etcd.password"
${clusterKey('forward_listen', cl && str(cl.forwardListen), '"0.0.0.0:26790"')}
${clusterKey('forward_advertise', cl && str(cl.forwardAdvertise), '"10.0.0.1:26790"')}
# Required: used for forwarding between nodes (mutual TLS) and for https:// etcd endpoints.
${clusterKey('tls_ca_file', cl && str(cl.tlsCaFile), '"/etc/cometkms/tls/ca.pem"')}
${clusterKey('tls_cert_file', cl && str(cl.tlsCertFile), '"/etc/cometkms/tls/node.pem"')}
${clusterKey('tls_key_file', cl && str(cl.tlsKeyFile), '"/etc/cometkms/tls/node-key.pem"')}

# One [[chain]] per chain this KMS signs for.
${chainNote}[[chain]]
id = ${str(c.id)}
# CKA_LABEL of the key pair in the token.
key_label = ${str(c.keyLabel)}
# "ed25519" or "secp256k1"
key_type = ${str(c.keyType)}
# "v0.34" | "v0.37" | "v0.38" | "v1.0"
protocol = ${str(c.protocol)}
# Refuse a height more than this far above the last signed one. The default, a little over a
# day of 1 s blocks, lets a validator that was offline for a day sign again, and stops one
# hostile request far above the chain from burning every height below it.
max_height_jump = ${d.maxHeightJump}

# One [[chain.validator]] per node endpoint to dial: tcp://host:port or unix:///abs/path.
[[chain.validator]]
addr = ${str(c.validator)}
# [[chain.validator]]
# addr = "unix:///run/cometbft/privval.sock"
`;
}
