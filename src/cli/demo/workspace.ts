/**
 * Everything the demo writes into its temporary directory: the validator key in each node's own
 * SoftHSM token, the cluster's TLS material, each node's home and config.toml.
 *
 * Layout (one directory per node, as if each ran on its own host):
 *   DIR/kms-N/hsm/          softhsm2.conf, token files, user.pin, so.pin
 *   DIR/kms-N/home/         state dir, privval transport identity
 *   DIR/kms-N/config.toml   DIR/kms-N/admin.token   DIR/kms-N/node.log
 *   DIR/pki/                CA and node certificates (cluster mode)
 *   DIR/etcd/               etcd members' data (cluster mode)
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ed25519 } from '@noble/curves/ed25519.js';
import { formatPrivValidatorKey } from '../../cometbft/privval-files.ts';
import type { KeyType, ProtocolVersion } from '../../cometbft/types.ts';
import { SOFTHSM_MODULE } from '../../pkcs11/softhsm.ts';
import { loadOrCreateIdentity } from '../../privval/identity.ts';
import { STATE_DIR } from '../../store/file.ts';
import type { ChildProcesses } from './children.ts';

/** The repository's CLI entry point, which the demo runs for every node and provisioning step. */
export const CLI_PATH = fileURLToPath(new URL('../../../bin/cometkms.js', import.meta.url));
const MAKE_CERTS = fileURLToPath(new URL('../../../deploy/tls/make-certs.sh', import.meta.url));

/** The one chain the demo validator signs for. */
export const DEMO_CHAIN: { id: string; keyLabel: string; keyType: KeyType; protocol: ProtocolVersion } = {
  id: 'demo-chain-1',
  keyLabel: 'demo-validator',
  keyType: 'ed25519',
  protocol: 'v0.38',
};
const TOKEN_LABEL = 'cometkms';
const CLI_TIMEOUT_MS = 30_000;

/** One node's token: where SoftHSM finds it and the PIN the node is given in its environment. */
export interface NodeToken {
  nodeId: string;
  dir: string;
  softhsmConf: string;
  pin: string;
}

/**
 * The environment of a demo child: its SoftHSM config and (once known) its PIN, and nothing
 * inherited that could reconfigure it (stray COMETKMS_*, SOFTHSM2_CONF or NODE_ENV).
 */
export function childEnv(softhsmConf: string, pin?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('COMETKMS_') && k !== 'SOFTHSM2_CONF' && k !== 'NODE_ENV') env[k] = v;
  }
  env.SOFTHSM2_CONF = softhsmConf;
  if (pin !== undefined) env.COMETKMS_HSM_PIN = pin;
  return env;
}

/**
 * Creates one SoftHSM token per node and puts the SAME validator key into each. The key is
 * generated here once, written to a 0600 file only for the import, and removed right after.
 * (SoftHSM cannot export a key generated inside a token, so importing one file into every token
 * is the only way to give several software tokens one key; with real HSMs the key is generated
 * in the HSM and replicated by the vendor's secure backup, or imported once from the
 * validator's own priv_validator_key.json.) Returns the validator's public key as hex.
 */
export async function provisionTokens(
  children: ChildProcesses,
  dir: string,
  nodeIds: string[],
): Promise<{ tokens: NodeToken[]; pubKeyHex: string }> {
  const seed = ed25519.utils.randomSecretKey();
  const keyFile = join(dir, 'priv_validator_key.json');
  try {
    await writeFile(keyFile, formatPrivValidatorKey('ed25519', seed), { mode: 0o600, flag: 'wx' });
    const results = await Promise.all(nodeIds.map((id) => provisionToken(children, dir, id, keyFile)));
    return { tokens: results.map((r) => r.token), pubKeyHex: results[0]?.pubKeyHex ?? '' };
  } finally {
    seed.fill(0);
    await rm(keyFile, { force: true });
  }
}

async function provisionToken(
  children: ChildProcesses,
  dir: string,
  nodeId: string,
  keyFile: string,
): Promise<{ token: NodeToken; pubKeyHex: string }> {
  const hsmDir = join(dir, nodeId, 'hsm');
  await mkdir(hsmDir, { recursive: true, mode: 0o700 });
  const softhsmConf = join(hsmDir, 'softhsm2.conf');
  await children.run(
    `softhsm init (${nodeId})`,
    process.execPath,
    [CLI_PATH, 'softhsm', 'init', '--dir', hsmDir, '--label', TOKEN_LABEL, '--module', SOFTHSM_MODULE],
    childEnv(softhsmConf),
    CLI_TIMEOUT_MS,
  );
  const pin = (await readFile(join(hsmDir, 'user.pin'), 'utf8')).trim();
  const token: NodeToken = { nodeId, dir: hsmDir, softhsmConf, pin };
  const out = await children.run(
    `keys import (${nodeId})`,
    process.execPath,
    [
      CLI_PATH,
      'keys',
      'import',
      '--module',
      SOFTHSM_MODULE,
      '--token-label',
      TOKEN_LABEL,
      '--profile',
      'softhsm2',
      '--from',
      keyFile,
      '--label',
      DEMO_CHAIN.keyLabel,
      '--json',
    ],
    childEnv(softhsmConf, pin),
    CLI_TIMEOUT_MS,
  );
  const shown = JSON.parse(out) as { pub_key_hex?: unknown };
  if (typeof shown.pub_key_hex !== 'string') throw new Error(`keys import (${nodeId}) printed no public key`);
  return { token, pubKeyHex: shown.pub_key_hex };
}

/**
 * `cometkms state init` for the demo chain, as an operator does once for a NEW validator: the
 * simulated chain starts at height 1 and this key has never signed on it. (A node never creates
 * a chain's state by itself: after data loss it refuses to sign instead.) With `[cluster]` the
 * state goes to etcd, so one node's config is enough.
 */
export async function initDemoChainState(children: ChildProcesses, setup: NodeSetup): Promise<void> {
  await children.run(
    `state init (${setup.nodeId})`,
    process.execPath,
    [CLI_PATH, 'state', 'init', '--config', setup.configPath, '--chain', DEMO_CHAIN.id],
    setup.env,
    CLI_TIMEOUT_MS,
  );
}

/** One node's TLS files for `[cluster]`. */
export interface NodeTls {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** Makes a private CA and one certificate per node (SAN 127.0.0.1) with deploy/tls/make-certs.sh. */
export async function makeCerts(
  children: ChildProcesses,
  dir: string,
  nodeIds: string[],
): Promise<Map<string, NodeTls>> {
  const out = join(dir, 'pki');
  await children.run(
    'make-certs.sh',
    'bash',
    [
      MAKE_CERTS,
      '--out',
      out,
      '--ca-name',
      'cometkms-demo',
      '--days',
      '1',
      ...nodeIds.flatMap((id) => ['--node', `${id}:127.0.0.1`]),
    ],
    process.env,
    CLI_TIMEOUT_MS,
  );
  return new Map(
    nodeIds.map((id) => [
      id,
      {
        caFile: join(out, id, 'ca.pem'),
        certFile: join(out, id, 'node.pem'),
        keyFile: join(out, id, 'node-key.pem'),
      },
    ]),
  );
}

/** What a node's config says about the cluster (absent in single-node mode). */
export interface ClusterSettings {
  etcdEndpoints: string[];
  forwardPort: number;
  tls: NodeTls;
}

/** A node ready to start: its config, admin token and log file. */
export interface NodeSetup {
  nodeId: string;
  home: string;
  configPath: string;
  adminToken: string;
  logFile: string;
  env: NodeJS.ProcessEnv;
}

const str = (s: string): string => JSON.stringify(s);

/**
 * Prepares a node's home (as `cometkms init` does: state dir and transport identity) and writes
 * its config.toml. The admin API listens on a port the OS picks; the node logs it when ready.
 */
export async function writeNodeConfig(opts: {
  dir: string;
  token: NodeToken;
  validatorAddr: string;
  cluster?: ClusterSettings;
}): Promise<NodeSetup> {
  const nodeId = opts.token.nodeId;
  const nodeDir = join(opts.dir, nodeId);
  const home = join(nodeDir, 'home');
  await mkdir(join(home, STATE_DIR), { recursive: true, mode: 0o700 });
  await loadOrCreateIdentity(home);
  const adminToken = randomBytes(16).toString('hex');
  const tokenFile = join(nodeDir, 'admin.token');
  await writeFile(tokenFile, `${adminToken}\n`, { mode: 0o600 });
  const c = opts.cluster;
  const cluster = c
    ? [
        '[cluster]',
        `etcd_endpoints = [${c.etcdEndpoints.map(str).join(', ')}]`,
        'lease_ttl_s = 1',
        `forward_listen = ${str(`127.0.0.1:${c.forwardPort}`)}`,
        `forward_advertise = ${str(`127.0.0.1:${c.forwardPort}`)}`,
        `tls_ca_file = ${str(c.tls.caFile)}`,
        `tls_cert_file = ${str(c.tls.certFile)}`,
        `tls_key_file = ${str(c.tls.keyFile)}`,
        '',
      ].join('\n')
    : '';
  const text = [
    '# Written by `cometkms demo`. The HSM PIN comes from COMETKMS_HSM_PIN.',
    '[node]',
    `id = ${str(nodeId)}`,
    `home = ${str(home)}`,
    '',
    '[hsm]',
    `module = ${str(SOFTHSM_MODULE)}`,
    'profile = "softhsm2"',
    `token_label = ${str(TOKEN_LABEL)}`,
    '',
    '[admin]',
    'listen = "127.0.0.1:0"',
    `token_file = ${str(tokenFile)}`,
    '',
    cluster,
    '[[chain]]',
    `id = ${str(DEMO_CHAIN.id)}`,
    `key_label = ${str(DEMO_CHAIN.keyLabel)}`,
    `key_type = ${str(DEMO_CHAIN.keyType)}`,
    `protocol = ${str(DEMO_CHAIN.protocol)}`,
    '[[chain.validator]]',
    `addr = ${str(opts.validatorAddr)}`,
    '',
  ].join('\n');
  const configPath = join(nodeDir, 'config.toml');
  await writeFile(configPath, text, { mode: 0o600 });
  return {
    nodeId,
    home,
    configPath,
    adminToken,
    logFile: join(nodeDir, 'node.log'),
    env: childEnv(opts.token.softhsmConf, opts.token.pin),
  };
}
