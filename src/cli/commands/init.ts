/**
 * `cometkms init`: prepares a home directory (config.toml, state dir, transport identity). It
 * never creates a sign state: `cometkms state init` or `state import` does that, on purpose.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { type KeyType, PROTOCOL_VERSIONS, type ProtocolVersion } from '../../cometbft/types.ts';
import { ConfigError, parseConfig } from '../../config/load.ts';
import { configTemplate, type TemplateOptions } from '../../config/template.ts';
import { loadOrCreateIdentity } from '../../privval/identity.ts';
import { STATE_DIR } from '../../store/file.ts';
import { UsageError } from '../errors.ts';

/** The admin API token `init` creates in the home. */
const ADMIN_TOKEN_FILE = 'admin.token';

/** The files deploy/tls/make-certs.sh writes for each node, which `--tls-dir` points at. */
const TLS_DIR_FILES = { ca: 'ca.pem', cert: 'node.pem', key: 'node-key.pem' } as const;

interface InitOptions {
  home: string;
  nodeId?: string;
  chainId?: string;
  keyLabel?: string;
  keyType: string;
  validator?: string;
  protocol: string;
  adminListen?: string;
  hsmModule?: string;
  tokenLabel?: string;
  pinFile?: string;
  cluster?: boolean;
  etcdEndpoints?: string;
  forwardListen: string;
  forwardAdvertise?: string;
  tlsDir?: string;
  tlsCaFile?: string;
  tlsCertFile?: string;
  tlsKeyFile?: string;
}

/** A node id from the host name, made to fit [A-Za-z0-9._-]. */
function defaultNodeId(): string {
  const id = hostname().replace(/[^A-Za-z0-9._-]/g, '-');
  return id.length > 0 ? id : 'kms-1';
}

function chainOptions(o: InitOptions): TemplateOptions['chain'] {
  const given = [o.chainId, o.keyLabel, o.validator].filter((v) => v !== undefined).length;
  if (given === 0) return undefined;
  if (o.chainId === undefined || o.keyLabel === undefined || o.validator === undefined) {
    throw new UsageError('--chain-id, --key-label and --validator go together: give all three or none');
  }
  if (!(PROTOCOL_VERSIONS as readonly string[]).includes(o.protocol)) {
    throw new UsageError(
      `--protocol must be one of ${PROTOCOL_VERSIONS.join(', ')}, got ${JSON.stringify(o.protocol)}`,
    );
  }
  if (o.keyType !== 'ed25519' && o.keyType !== 'secp256k1') {
    throw new UsageError(`--key-type must be ed25519 or secp256k1, got ${JSON.stringify(o.keyType)}`);
  }
  return {
    id: o.chainId,
    keyLabel: o.keyLabel,
    keyType: o.keyType as KeyType,
    protocol: o.protocol as ProtocolVersion,
    validator: o.validator,
  };
}

/** The [cluster] section `--cluster` asks for; every path is made absolute. */
function clusterOptions(o: InitOptions): TemplateOptions['cluster'] {
  const clusterOnly = [
    o.etcdEndpoints,
    o.forwardAdvertise,
    o.tlsDir,
    o.tlsCaFile,
    o.tlsCertFile,
    o.tlsKeyFile,
  ];
  if (o.cluster !== true) {
    if (clusterOnly.some((v) => v !== undefined)) {
      throw new UsageError('--etcd-endpoints, --forward-advertise and the TLS options need --cluster');
    }
    return undefined;
  }
  const fromDir = (file: string) => (o.tlsDir === undefined ? undefined : join(o.tlsDir, file));
  const ca = o.tlsCaFile ?? fromDir(TLS_DIR_FILES.ca);
  const cert = o.tlsCertFile ?? fromDir(TLS_DIR_FILES.cert);
  const key = o.tlsKeyFile ?? fromDir(TLS_DIR_FILES.key);
  if (o.etcdEndpoints === undefined || o.forwardAdvertise === undefined) {
    throw new UsageError('--cluster needs --etcd-endpoints and --forward-advertise');
  }
  if (ca === undefined || cert === undefined || key === undefined) {
    throw new UsageError(
      '--cluster needs the TLS files: --tls-dir DIR (as deploy/tls/make-certs.sh writes it), or --tls-ca-file, --tls-cert-file and --tls-key-file',
    );
  }
  return {
    etcdEndpoints: o.etcdEndpoints
      .split(',')
      .map((e) => e.trim())
      .filter((e) => e !== ''),
    forwardListen: o.forwardListen,
    forwardAdvertise: o.forwardAdvertise,
    tlsCaFile: resolve(ca),
    tlsCertFile: resolve(cert),
    tlsKeyFile: resolve(key),
  };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function runInit(o: InitOptions): Promise<void> {
  const home = resolve(o.home);
  const configPath = join(home, 'config.toml');
  const adminTokenFile = join(home, ADMIN_TOKEN_FILE);
  const hsm = {
    ...(o.hsmModule === undefined ? {} : { module: resolve(o.hsmModule) }),
    ...(o.tokenLabel === undefined ? {} : { tokenLabel: o.tokenLabel }),
    ...(o.pinFile === undefined ? {} : { pinFile: resolve(o.pinFile) }),
  };
  const text = configTemplate({
    nodeId: o.nodeId ?? defaultNodeId(),
    home,
    adminTokenFile,
    ...(o.adminListen === undefined ? {} : { adminListen: o.adminListen }),
    hsm,
    chain: chainOptions(o),
    cluster: clusterOptions(o),
  });
  // Validate what would be written before touching the disk, so bad options leave nothing behind.
  try {
    parseConfig(text, configPath, {});
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`invalid init options: ${err.message}`);
    throw err;
  }
  if (await exists(configPath)) {
    throw new Error(
      `${configPath} already exists: init never overwrites a configuration. Edit it, or remove it first to start over`,
    );
  }
  await mkdir(home, { recursive: true, mode: 0o700 });
  await mkdir(join(home, STATE_DIR), { recursive: true, mode: 0o700 });
  // 'wx' makes the no-overwrite rule hold even against a concurrent init.
  await writeFile(configPath, text, { flag: 'wx', mode: 0o600 });
  // The admin API refuses every non-public route without a token: make one, so `cometkms status`
  // works out of the box. 'wx' never replaces a token an operator already handed out.
  await writeFile(adminTokenFile, `${randomBytes(32).toString('hex')}\n`, { flag: 'wx', mode: 0o600 });
  const identity = await loadOrCreateIdentity(home);
  const out = process.stdout;
  out.write(`initialised ${home}\n`);
  out.write(`  ${configPath}${o.cluster === true ? ' (with [cluster])' : ''}\n`);
  out.write(`  ${join(home, STATE_DIR)}/ (sign state, one file per chain)\n`);
  out.write(`  ${adminTokenFile} (admin API bearer token, mode 0600)\n`);
  out.write(`  privval transport identity: node id ${identity.nodeId}\n\n`);
  out.write('next steps:\n');
  out.write(`  1. edit ${configPath}${o.chainId === undefined ? ' (the [[chain]] is a placeholder)' : ''}\n`);
  out.write('  2. create or import the validator key: cometkms keys generate|import\n');
  out.write(`  3. check everything start needs: cometkms config check --config ${configPath}\n`);
  out.write(
    "  4. create each chain's sign state, once (single node: before the first start; with [cluster]: from any one node, it is written to etcd):\n" +
      `     a new validator (this key never signed on the chain): cometkms state init --config ${configPath} --chain <id> --height <current height>\n` +
      `     a validator that signed before: cometkms state import --config ${configPath} --chain <id> --from priv_validator_state.json\n` +
      '     (a node never creates a chain state by itself: without one it refuses to sign that chain)\n',
  );
  out.write(`  5. cometkms start --config ${configPath}\n`);
}

/** Adds `cometkms init`. */
export function registerInit(program: Command): void {
  program
    .command('init')
    .description(
      'create a home directory: commented config.toml, state directory, privval transport identity',
    )
    .requiredOption('--home <dir>', 'home directory to create')
    .option('--node-id <id>', 'node id, unique within the cluster (default: from the host name)')
    .option('--chain-id <id>', 'chain to configure (with --key-label and --validator)')
    .option('--key-label <label>', 'CKA_LABEL of the validator key in the token')
    .option('--key-type <type>', 'ed25519 or secp256k1', 'ed25519')
    .option('--validator <addr>', 'validator endpoint to dial: tcp://host:port or unix:///path')
    .option('--protocol <version>', `privval protocol: ${PROTOCOL_VERSIONS.join(' | ')}`, 'v0.38')
    .option('--admin-listen <host:port>', 'admin API address (default 127.0.0.1:26780)')
    .option('--hsm-module <path>', 'PKCS#11 module (default /usr/lib/softhsm/libsofthsm2.so)')
    .option('--token-label <label>', 'label of the token holding the keys (default cometkms)')
    .option('--pin-file <file>', 'file holding the HSM user PIN (default: COMETKMS_HSM_PIN)')
    .option('--cluster', 'write a [cluster] section (needs the options below)')
    .option('--etcd-endpoints <urls>', 'comma-separated etcd client URLs, e.g. https://10.0.0.1:2379,…')
    .option('--forward-listen <host:port>', 'where this node accepts forwarded requests', '0.0.0.0:26790')
    .option('--forward-advertise <host:port>', 'the address the other nodes forward to')
    .option(
      '--tls-dir <dir>',
      "a node's directory from deploy/tls/make-certs.sh (ca.pem, node.pem, node-key.pem)",
    )
    .option('--tls-ca-file <file>', 'cluster CA (instead of --tls-dir)')
    .option('--tls-cert-file <file>', 'node certificate (instead of --tls-dir)')
    .option('--tls-key-file <file>', 'node key, mode 0600 (instead of --tls-dir)')
    .action(async (opts: InitOptions) => runInit(opts));
}
