/**
 * `cometkms state show|export|import`: read the sign state of a chain, or seed it from / to a
 * CometBFT `priv_validator_state.json` (e.g. when migrating a validator to or from the KMS).
 *
 * The state lives where the node keeps it: with `[cluster]` in etcd (the state key every leader
 * reserves through, reached with the config's endpoints, TLS and credentials), else in the
 * home's file store.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { Etcd3 } from 'etcd3';
import { clusterEtcdOptions } from '../../cluster/etcd-config.ts';
import { loadClusterTls } from '../../cluster/tls.ts';
import { formatPrivValidatorState, parsePrivValidatorState } from '../../cometbft/privval-files.ts';
import { compareHRS } from '../../cometbft/types.ts';
import { loadConfig } from '../../config/load.ts';
import type { ClusterSection, Config } from '../../config/types.ts';
import { decodeSignState, etcdKeys, readEtcdStateRecord, swapEtcdSignState } from '../../store/etcd.ts';
import { FileSignStateStore, readChainState } from '../../store/file.ts';
import { formatHrs } from '../../store/state-codec.ts';
import { initialSignState, type SignState } from '../../store/types.ts';
import { assertHomeInitialised } from '../runtime/home.ts';

interface Common {
  config: string;
  chainId: string;
}

const STEP_NAMES = ['none', 'propose', 'prevote', 'precommit'];

/**
 * The config of a state command; the chain must be one the config signs for. Without `[cluster]`
 * the state is in the home, which must be initialised; a cluster's is in etcd.
 */
async function prepare(o: Common): Promise<Config> {
  const config = await loadConfig(o.config);
  if (!config.chains.some((c) => c.id === o.chainId)) {
    const known = config.chains.map((c) => JSON.stringify(c.id)).join(', ');
    throw new Error(`chain ${JSON.stringify(o.chainId)} is not in ${config.path} (chains: ${known})`);
  }
  if (config.cluster === undefined) await assertHomeInitialised(config.node.home);
  return config;
}

/** Runs `fn` with an etcd client built from `[cluster]` exactly as `start` builds it. */
async function withEtcd<T>(cluster: ClusterSection, fn: (client: Etcd3) => Promise<T>): Promise<T> {
  // Loaded only here: the etcd client (gRPC) would add a third to every command's start-up.
  const { createEtcdClient } = await import('../../cluster/etcd-client.ts');
  const client = createEtcdClient(await clusterEtcdOptions(cluster, await loadClusterTls(cluster)));
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** `call`'s result; its failure names the etcd endpoints (etcd3's "14 UNAVAILABLE: …" does not). */
async function fromEtcd<T>(cluster: ClusterSection, call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (err) {
    throw new Error(`etcd (${cluster.etcd_endpoints.join(', ')}): ${(err as Error).message}`);
  }
}

/** The etcd key of a chain's state, for messages. */
const stateKey = (cluster: ClusterSection, chainId: string): string =>
  etcdKeys.state(cluster.etcd_prefix, chainId).toString();

/**
 * The stored state of `chainId`: the state key in etcd with `[cluster]` (the initial state while
 * no node has created it yet), else the home's state file.
 */
async function readState(config: Config, chainId: string): Promise<SignState> {
  const cluster = config.cluster;
  if (cluster === undefined) return await readChainState(config.node.home, chainId);
  return await withEtcd(cluster, async (client) => {
    const record = await fromEtcd(cluster, readEtcdStateRecord(client, cluster.etcd_prefix, chainId));
    return record === undefined ? initialSignState() : decodeSignState(record.value, record.key);
  });
}

/** Where `show` says the state was read from. */
function sourceOf(config: Config, chainId: string): string {
  const cluster = config.cluster;
  return cluster === undefined
    ? `file store in ${config.node.home}`
    : `etcd key ${stateKey(cluster, chainId)} (${cluster.etcd_endpoints.join(', ')})`;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function describeState(chainId: string, source: string, s: SignState): string {
  const bytes = (b: Uint8Array) => (b.length === 0 ? '(none)' : `${b.length} bytes ${hex(b)}`);
  return [
    `chain:                ${chainId}`,
    `stored in:            ${source}`,
    `height:               ${s.height}`,
    `round:                ${s.round}`,
    `step:                 ${s.step} (${STEP_NAMES[s.step] ?? 'unknown'})`,
    `sign bytes:           ${bytes(s.signBytes)}`,
    `extension sign bytes: ${bytes(s.extensionSignBytes)}`,
    `signature:            ${s.signature.length === 0 ? '(not recorded)' : bytes(s.signature)}`,
    '',
  ].join('\n');
}

async function show(o: Common & { json?: boolean }): Promise<void> {
  const config = await prepare(o);
  const s = await readState(config, o.chainId);
  if (!o.json) {
    process.stdout.write(describeState(o.chainId, sourceOf(config, o.chainId), s));
    return;
  }
  // height as a string, like CometBFT's JSON for int64: no rounding above 2^53
  const doc = {
    chain_id: o.chainId,
    height: s.height.toString(),
    round: s.round,
    step: s.step,
    sign_bytes: hex(s.signBytes),
    extension_sign_bytes: hex(s.extensionSignBytes),
    signature: hex(s.signature),
  };
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}

async function exportState(o: Common & { out?: string }): Promise<void> {
  const config = await prepare(o);
  const s = await readState(config, o.chainId);
  // FilePV panics on a request at the stored HRS when sign bytes are stored without a signature
  // (spec §7.1), and CometKMS records signatures lazily (etcd: never). Without sign bytes FilePV
  // refuses that one HRS ("no SignBytes found") and signs above it: safe, and no crash.
  const unsigned = s.signature.length === 0 && s.signBytes.length > 0;
  if (unsigned) {
    process.stderr.write(
      `warning: no signature is recorded for the reservation at ${formatHrs(s)}; its sign bytes are left out, ` +
        'so CometBFT will refuse that one height/round/step instead of crashing on it\n',
    );
  }
  const text = formatPrivValidatorState({
    height: s.height,
    round: s.round,
    step: s.step,
    signature: s.signature,
    signBytes: unsigned ? new Uint8Array() : s.signBytes,
  });
  if (o.out === undefined) {
    process.stdout.write(`${text}\n`);
    return;
  }
  // Never overwrite: pointing --out at a live validator's state file by mistake must not
  // replace it silently.
  await writeFile(o.out, text, { flag: 'wx', mode: 0o600 }).catch((err: NodeJS.ErrnoException) => {
    throw err.code === 'EEXIST'
      ? new Error(`${o.out} already exists: remove it first or choose another --out`)
      : err;
  });
  process.stderr.write(`wrote ${o.out} (chain ${o.chainId}, height/round/step ${formatHrs(s)})\n`);
}

const FORCE_WARNING = `
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! state import --force: the stored sign state is REPLACED without any safety check.      !!
!! If the validator key has signed anything above the imported height/round/step, or     !!
!! at the same one over other bytes, the KMS can sign a conflicting vote: a DOUBLE SIGN, !!
!! which gets the validator slashed and tombstoned for good. Use --force only with a      !!
!! state you know to be the latest the key ever signed (from every signer that held it). !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
`;

/**
 * Why importing `next` over `current` would move the HRS backwards or sideways, or undefined if
 * it is safe. Same HRS is only safe with the same sign bytes, or over a state with none.
 */
function refusal(current: SignState, next: SignState): string | undefined {
  const cmp = compareHRS(next, current);
  if (cmp < 0) return 'it would move the height/round/step backwards';
  if (cmp === 0 && current.signBytes.length > 0 && hex(current.signBytes) !== hex(next.signBytes)) {
    return 'it has the same height/round/step with different sign bytes';
  }
  return undefined;
}

/** The error of an import that `refusal` stopped. */
function refusedImport(o: ImportOptions, why: string, current: SignState, next: SignState): Error {
  return new Error(
    `refusing to import ${o.from} for chain ${o.chainId}: ${why} (stored ${formatHrs(current)}, file ` +
      `${formatHrs(next)}). Signing from an older state risks a double sign. If you are certain the file ` +
      'holds the latest state the key ever signed, run again with --force',
  );
}

/** Whether `next` repeats `current` exactly (same HRS, same sign bytes): nothing to move. */
function sameState(current: SignState, next: SignState): boolean {
  return compareHRS(next, current) === 0 && hex(current.signBytes) === hex(next.signBytes);
}

type ImportOptions = Common & { from: string; force?: boolean };

async function importState(o: ImportOptions): Promise<void> {
  const config = await prepare(o);
  const parsed = parsePrivValidatorState(await readFile(o.from, 'utf8'));
  const next: SignState = {
    height: parsed.height,
    round: parsed.round,
    step: parsed.step,
    signBytes: parsed.signBytes,
    extensionSignBytes: new Uint8Array(),
    signature: parsed.signature,
  };
  if (config.cluster !== undefined) {
    await importToEtcd(config.cluster, o, next);
    return;
  }
  const home = config.node.home;
  // Opening takes the home lock: import only runs on a stopped node. With --force the stored
  // state is not verified on open: replacing an unusable state is what --force is for.
  const store = await FileSignStateStore.open(home, { chainIds: o.force ? [] : [o.chainId] });
  try {
    if (o.force) {
      process.stderr.write(FORCE_WARNING);
      const before = await readChainState(home, o.chainId).then(
        (s) => formatHrs(s),
        (err: Error) => `unusable (${err.message})`,
      );
      await store.forceWrite(o.chainId, next);
      process.stdout.write(
        `chain ${o.chainId}: sign state FORCED to height/round/step ${formatHrs(next)} (was ${before})\n`,
      );
      return;
    }
    const current = await store.load(o.chainId);
    const why = refusal(current, next);
    if (why) throw refusedImport(o, why, current, next);
    const sameBytes = sameState(current, next);
    if (!sameBytes) {
      const res = await store.reserve(o.chainId, current, { ...next, signature: new Uint8Array() });
      if (!res.ok)
        throw new Error(`the sign state of chain ${o.chainId} changed during import; nothing was imported`);
    }
    if (next.signature.length > 0)
      await store.recordSignature(o.chainId, next, next.signBytes, next.signature);
    process.stdout.write(
      sameBytes
        ? `chain ${o.chainId}: already at height/round/step ${formatHrs(next)}; nothing to move\n`
        : `chain ${o.chainId}: sign state set to height/round/step ${formatHrs(next)} (was ${formatHrs(current)})\n`,
    );
  } finally {
    await store.close();
  }
}

/**
 * Import into a cluster: ONE compare-and-swap transaction on the state key, against the mod
 * revision read just before (or "does not exist yet"), under the same rules as the file store.
 * Safe with nodes running: the leader's next fenced reservation compares the mod revision it
 * last saw, fails, re-reads and goes on from the imported state, refusing anything below it
 * (EtcdSignStateStore.reserve, ChainGuard.sign). If a node reserved in between, the swap fails
 * and nothing is written: the operator runs the import again against the new state.
 */
async function importToEtcd(cluster: ClusterSection, o: ImportOptions, next: SignState): Promise<void> {
  const prefix = cluster.etcd_prefix;
  const key = stateKey(cluster, o.chainId);
  await withEtcd(cluster, async (client) => {
    const record = await fromEtcd(cluster, readEtcdStateRecord(client, prefix, o.chainId));
    let current: SignState | undefined;
    let unusable: string | undefined;
    try {
      current = record === undefined ? initialSignState() : decodeSignState(record.value, record.key);
    } catch (err) {
      // Like the file store: an unusable state is replaced only by --force.
      if (!o.force) {
        throw new Error(
          `${(err as Error).message}; nothing was imported. Establish the last state the key signed and ` +
            'import it with --force',
        );
      }
      unusable = (err as Error).message;
    }
    if (o.force) {
      process.stderr.write(FORCE_WARNING);
    } else if (current !== undefined) {
      const why = refusal(current, next);
      if (why) throw refusedImport(o, why, current, next);
      if (sameState(current, next)) {
        process.stdout.write(
          `chain ${o.chainId}: etcd key ${key} already at height/round/step ${formatHrs(next)}; nothing to move\n`,
        );
        return;
      }
    }
    if (!(await fromEtcd(cluster, swapEtcdSignState(client, prefix, o.chainId, record, next)))) {
      throw new Error(
        `the sign state of chain ${o.chainId} in etcd (${key}) changed during import (a node signed ` +
          'meanwhile); nothing was imported. Run the import again',
      );
    }
    const before =
      current === undefined
        ? `unusable (${unusable})`
        : `${formatHrs(current)}${record === undefined ? ', no state in etcd yet' : ''}`;
    if (o.force && current !== undefined && compareHRS(next, current) < 0) {
      // Invariant 3: a node that saw the higher state treats the lower one as a regression.
      process.stderr.write(
        'the state moved backwards: running nodes that saw the higher state refuse to sign this chain ' +
          'until they are restarted\n',
      );
    }
    process.stdout.write(
      o.force
        ? `chain ${o.chainId}: sign state in etcd key ${key} FORCED to height/round/step ${formatHrs(next)} (was ${before})\n`
        : `chain ${o.chainId}: sign state in etcd key ${key} set to height/round/step ${formatHrs(next)} (was ${before})\n`,
    );
  });
}

/** Adds `cometkms state show|export|import`. */
export function registerState(program: Command): void {
  const state = program
    .command('state')
    .description('show the sign state of a chain, or seed it from / to a priv_validator_state.json');
  state
    .command('show')
    .description(
      'print the last reserved/signed state of a chain (works next to running nodes; with [cluster], read from etcd)',
    )
    .requiredOption('--config <file>', 'config.toml')
    .requiredOption('--chain-id <id>', 'chain id')
    .option('--json', 'print JSON (height as a string)')
    .action(show);
  state
    .command('export')
    .description(
      'write the state as a CometBFT priv_validator_state.json (extension sign bytes are not part of it)',
    )
    .requiredOption('--config <file>', 'config.toml')
    .requiredOption('--chain-id <id>', 'chain id')
    .option('--out <file>', 'file to create (never overwritten); default: stdout')
    .action(exportState);
  state
    .command('import')
    .description(
      'seed the state from a CometBFT priv_validator_state.json (single node: stop it first; ' +
        'with [cluster]: written to etcd, safe with nodes running)',
    )
    .requiredOption('--config <file>', 'config.toml')
    .requiredOption('--chain-id <id>', 'chain id')
    .requiredOption('--from <file>', 'priv_validator_state.json to import')
    .option('--force', 'replace the state even if it moves backwards or is unreadable (double-sign risk!)')
    .action(importState);
}
