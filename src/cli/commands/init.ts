/** `cometkms init`: prepares a home directory (config.toml, state dir, transport identity). */
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

/** The admin API token `init` creates in the home. */
const ADMIN_TOKEN_FILE = 'admin.token';

interface InitOptions {
  home: string;
  nodeId?: string;
  chainId?: string;
  keyLabel?: string;
  keyType: string;
  validator?: string;
  protocol: string;
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
    throw new Error('--chain-id, --key-label and --validator go together: give all three or none');
  }
  if (!(PROTOCOL_VERSIONS as readonly string[]).includes(o.protocol)) {
    throw new Error(
      `--protocol must be one of ${PROTOCOL_VERSIONS.join(', ')}, got ${JSON.stringify(o.protocol)}`,
    );
  }
  if (o.keyType !== 'ed25519' && o.keyType !== 'secp256k1') {
    throw new Error(`--key-type must be ed25519 or secp256k1, got ${JSON.stringify(o.keyType)}`);
  }
  return {
    id: o.chainId,
    keyLabel: o.keyLabel,
    keyType: o.keyType as KeyType,
    protocol: o.protocol as ProtocolVersion,
    validator: o.validator,
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
  const text = configTemplate({
    nodeId: o.nodeId ?? defaultNodeId(),
    home,
    adminTokenFile,
    chain: chainOptions(o),
  });
  // Validate what would be written before touching the disk, so bad options leave nothing behind.
  try {
    parseConfig(text, configPath, {});
  } catch (err) {
    if (err instanceof ConfigError) throw new Error(`invalid init options: ${err.message}`);
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
  out.write(`  ${configPath}\n`);
  out.write(`  ${join(home, STATE_DIR)}/ (sign state, one file per chain)\n`);
  out.write(`  ${adminTokenFile} (admin API bearer token, mode 0600)\n`);
  out.write(`  privval transport identity: node id ${identity.nodeId}\n\n`);
  out.write('next steps:\n');
  out.write(`  1. edit ${configPath}${o.chainId === undefined ? ' (the [[chain]] is a placeholder)' : ''}\n`);
  out.write('  2. create or import the validator key: cometkms keys generate|import\n');
  out.write(
    "  3. create each chain's sign state, once (single node: before the first start; with [cluster]: from any one node, it is written to etcd):\n" +
      `     a new validator (this key never signed on the chain): cometkms state init --config ${configPath} --chain <id> --height <current height>\n` +
      `     a validator that signed before: cometkms state import --config ${configPath} --chain <id> --from priv_validator_state.json\n` +
      '     (a node never creates a chain state by itself: without one it refuses to sign that chain)\n',
  );
  out.write(`  4. cometkms start --config ${configPath}\n`);
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
    .action(async (opts: InitOptions) => runInit(opts));
}
