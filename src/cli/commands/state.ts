/**
 * `cometkms state init|show|export|import|reset-high-water`: create, read and seed the sign state
 * of a chain, from / to a CometBFT `priv_validator_state.json` (e.g. when migrating a validator
 * to or from the KMS).
 *
 * The state lives where the node keeps it: with `[cluster]` in etcd (the state key every leader
 * reserves through, reached with the config's endpoints, TLS and credentials), else in the
 * home's file store. Nothing but `state init` and `state import` ever creates a chain's state
 * (ARCHITECTURE §2 invariant 7): a node never reads a missing state as an empty one.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { Etcd3 } from 'etcd3';
import { clusterEtcdOptions } from '../../cluster/etcd-config.ts';
import { loadClusterTls } from '../../cluster/tls.ts';
import { formatPrivValidatorState, parsePrivValidatorState } from '../../cometbft/privval-files.ts';
import { compareHRS, type HRS } from '../../cometbft/types.ts';
import { loadConfig } from '../../config/load.ts';
import type { ClusterSection, Config } from '../../config/types.ts';
import { MAX_HEIGHT } from '../../guard/decide.ts';
import {
  decodeSignState,
  type EtcdStateRecord,
  etcdKeys,
  readEtcdStateRecord,
  swapEtcdSignState,
} from '../../store/etcd.ts';
import { FileSignStateStore, readChainState } from '../../store/file.ts';
import { highWaterFile, readHighWater, writeHighWaterFile } from '../../store/high-water.ts';
import { acquireHomeLock } from '../../store/lock.ts';
import { formatHrs } from '../../store/state-codec.ts';
import { freshSignState, type SignState } from '../../store/types.ts';
import { assertHomeInitialised } from '../runtime/home.ts';

/** Options every state command takes; `--chain-id` is the older spelling of `--chain`. */
interface ChainOptions {
  config: string;
  chain?: string;
  chainId?: string;
}

interface Common {
  config: string;
  chain: string;
}

const STEP_NAMES = ['none', 'propose', 'prevote', 'precommit'];

/** `--chain` (or its alias `--chain-id`); missing or contradicting ones are usage errors (exit 2). */
function chainOf(o: ChainOptions, cmd: Command): Common {
  if (o.chain !== undefined && o.chainId !== undefined && o.chain !== o.chainId) {
    cmd.error(`error: --chain ${o.chain} and --chain-id ${o.chainId} disagree; give one`, { exitCode: 2 });
  }
  const chain = o.chain ?? o.chainId;
  if (chain === undefined) cmd.error("error: required option '--chain <id>' not specified", { exitCode: 2 });
  return { config: o.config, chain };
}

/**
 * The config of a state command; the chain must be one the config signs for. Without `[cluster]`
 * the state is in the home, which must be initialised; a cluster's is in etcd.
 */
async function prepare(o: Common): Promise<Config> {
  const config = await loadConfig(o.config);
  if (!config.chains.some((c) => c.id === o.chain)) {
    const known = config.chains.map((c) => JSON.stringify(c.id)).join(', ');
    throw new Error(`chain ${JSON.stringify(o.chain)} is not in ${config.path} (chains: ${known})`);
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

/** The stored state of `chainId` (undefined: it has none): etcd with `[cluster]`, else the home. */
async function readState(config: Config, chainId: string): Promise<SignState | undefined> {
  const cluster = config.cluster;
  if (cluster === undefined) return await readChainState(config.node.home, chainId);
  return await withEtcd(cluster, async (client) => {
    const record = await fromEtcd(cluster, readEtcdStateRecord(client, cluster.etcd_prefix, chainId));
    return record === undefined ? undefined : decodeSignState(record.value, record.key);
  });
}

/** This host's node's high-water mark of `chainId` (cluster mode), if its home has one. */
function localMark(config: Config, chainId: string): HRS | undefined {
  return config.cluster === undefined ? undefined : readHighWater(config.node.home, chainId);
}

/** Where `show` says the state was read from. */
function sourceOf(config: Config, chainId: string): string {
  const cluster = config.cluster;
  return cluster === undefined
    ? `file store in ${config.node.home}`
    : `etcd key ${stateKey(cluster, chainId)} (${cluster.etcd_endpoints.join(', ')})`;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** The error for a command that needs a state the chain does not have. */
function noState(config: Config, chainId: string): Error {
  return new Error(
    `chain ${JSON.stringify(chainId)} has no sign state (${sourceOf(config, chainId)}). Create it with ` +
      `cometkms state init --config ${config.path} --chain ${JSON.stringify(chainId)} (a key that never signed ` +
      'on this chain) or cometkms state import (from the last priv_validator_state.json it signed)',
  );
}

function describeState(chainId: string, source: string, s: SignState, mark: HRS | undefined): string {
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
    ...(mark === undefined ? [] : [`this node has seen:   ${formatHrs(mark)} (its high-water mark)`]),
    '',
  ].join('\n');
}

async function show(o: Common & { json?: boolean }): Promise<void> {
  const config = await prepare(o);
  const s = await readState(config, o.chain);
  if (s === undefined) throw noState(config, o.chain);
  const mark = localMark(config, o.chain);
  if (!o.json) {
    process.stdout.write(describeState(o.chain, sourceOf(config, o.chain), s, mark));
    return;
  }
  // height as a string, like CometBFT's JSON for int64: no rounding above 2^53
  const doc = {
    chain_id: o.chain,
    height: s.height.toString(),
    round: s.round,
    step: s.step,
    sign_bytes: hex(s.signBytes),
    extension_sign_bytes: hex(s.extensionSignBytes),
    signature: hex(s.signature),
    ...(mark === undefined
      ? {}
      : { high_water: { height: mark.height.toString(), round: mark.round, step: mark.step } }),
  };
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}

async function exportState(o: Common & { out?: string }): Promise<void> {
  const config = await prepare(o);
  const s = await readState(config, o.chain);
  if (s === undefined) throw noState(config, o.chain);
  // FilePV panics on a request at the stored HRS when sign bytes are stored without a signature
  // (spec §7.1), and CometKMS records ed25519 signatures lazily (etcd: never). Without sign bytes
  // FilePV refuses that one HRS ("no SignBytes found") and signs above it: safe, and no crash.
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
  process.stderr.write(`wrote ${o.out} (chain ${o.chain}, height/round/step ${formatHrs(s)})\n`);
}

/** `--height`: a decimal height in 0..2^62. */
function parseHeight(text: string, cmd: Command): bigint {
  if (!/^(0|[1-9][0-9]{0,18})$/.test(text) || BigInt(text) > MAX_HEIGHT) {
    cmd.error(`error: --height must be a whole number from 0 to ${MAX_HEIGHT}, got ${JSON.stringify(text)}`, {
      exitCode: 2,
    });
  }
  return BigInt(text);
}

/**
 * `state init`: the state of a key that has never signed on the chain, at the chain's current
 * height H (H/0/0, no sign bytes), so that `max_height_jump` holds from the first signature.
 * Refuses when the chain has any state, or (cluster) when this host's node has seen one.
 */
async function initState(o: Common & { height: string }, cmd: Command): Promise<void> {
  const height = parseHeight(o.height, cmd);
  const config = await prepare(o);
  const state = freshSignState(height);
  const cluster = config.cluster;
  if (cluster === undefined) {
    // Opening takes the home lock: init only runs on a stopped node.
    const store = await FileSignStateStore.open(config.node.home);
    try {
      await store.initialize(o.chain, state);
    } finally {
      await store.close();
    }
    process.stdout.write(
      `chain ${o.chain}: sign state created at height/round/step ${formatHrs(state)} in ${config.node.home}\n`,
    );
    return;
  }
  const mark = localMark(config, o.chain);
  if (mark !== undefined) {
    throw new Error(
      `refusing to init chain ${o.chain}: this node has seen its sign state at ${formatHrs(mark)} ` +
        `(${highWaterFile(config.node.home, o.chain)}), so the key has signed on it. Restore the last signed ` +
        'state with cometkms state import instead',
    );
  }
  const key = stateKey(cluster, o.chain);
  await withEtcd(cluster, async (client) => {
    const created = await fromEtcd(
      cluster,
      swapEtcdSignState(client, cluster.etcd_prefix, o.chain, undefined, state),
    );
    if (!created) {
      throw new Error(
        `chain ${o.chain} already has a sign state in etcd (${key}); nothing was created. ` +
          'Read it with cometkms state show; move it forward with cometkms state import',
      );
    }
  });
  process.stdout.write(
    `chain ${o.chain}: sign state created at height/round/step ${formatHrs(state)} in etcd key ${key}\n`,
  );
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
function refusedImport(o: ImportOptions, why: string, current: HRS, next: SignState): Error {
  return new Error(
    `refusing to import ${o.from} for chain ${o.chain}: ${why} (stored ${formatHrs(current)}, file ` +
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
    await importToEtcd(config, config.cluster, o, next);
    return;
  }
  const home = config.node.home;
  // Opening takes the home lock: import only runs on a stopped node. The stored state is verified
  // below, not on open: replacing an unusable state is what --force is for.
  const store = await FileSignStateStore.open(home);
  try {
    if (o.force) {
      process.stderr.write(FORCE_WARNING);
      const before = await readChainState(home, o.chain).then(
        (s) => (s === undefined ? 'no state' : formatHrs(s)),
        (err: Error) => `unusable (${err.message})`,
      );
      await store.forceWrite(o.chain, next);
      process.stdout.write(
        `chain ${o.chain}: sign state FORCED to height/round/step ${formatHrs(next)} (was ${before})\n`,
      );
      return;
    }
    const current = await store.load(o.chain);
    if (current === undefined) {
      // The operator vouches for the file: it is the state this chain starts from.
      await store.initialize(o.chain, next);
      process.stdout.write(
        `chain ${o.chain}: sign state created at height/round/step ${formatHrs(next)} (it had none)\n`,
      );
      return;
    }
    const why = refusal(current, next);
    if (why) throw refusedImport(o, why, current, next);
    const sameBytes = sameState(current, next);
    if (!sameBytes) {
      const res = await store.reserve(o.chain, current, { ...next, signature: new Uint8Array() });
      if (!res.ok)
        throw new Error(`the sign state of chain ${o.chain} changed during import; nothing was imported`);
    }
    if (next.signature.length > 0) {
      await store.recordSignature(o.chain, next, next.signature, { durable: true });
    }
    process.stdout.write(
      sameBytes
        ? `chain ${o.chain}: already at height/round/step ${formatHrs(next)}; nothing to move\n`
        : `chain ${o.chain}: sign state set to height/round/step ${formatHrs(next)} (was ${formatHrs(current)})\n`,
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
 * (EtcdSignStateStore.reserve, ChainGuard.sign) or below its high-water mark. If a node reserved
 * in between, the swap fails and nothing is written: the operator runs the import again.
 */
async function importToEtcd(
  config: Config,
  cluster: ClusterSection,
  o: ImportOptions,
  next: SignState,
): Promise<void> {
  const prefix = cluster.etcd_prefix;
  const key = stateKey(cluster, o.chain);
  const mark = localMark(config, o.chain);
  await withEtcd(cluster, async (client) => {
    const record = await fromEtcd(cluster, readEtcdStateRecord(client, prefix, o.chain));
    const current = readableState(record, o.force === true);
    if (o.force) {
      process.stderr.write(FORCE_WARNING);
    } else {
      if (current.state !== undefined) {
        const why = refusal(current.state, next);
        if (why) throw refusedImport(o, why, current.state, next);
        if (sameState(current.state, next)) {
          process.stdout.write(
            `chain ${o.chain}: etcd key ${key} already at height/round/step ${formatHrs(next)}; nothing to move\n`,
          );
          return;
        }
      }
      if (mark !== undefined && compareHRS(next, mark) < 0) {
        // Every node that saw the higher state would refuse the imported one: etcd lost data (a
        // wipe, an older snapshot) and the file is not the last state the key signed.
        throw new Error(
          `refusing to import ${o.from} for chain ${o.chain}: this node has seen the chain at ${formatHrs(mark)} ` +
            `(${highWaterFile(config.node.home, o.chain)}), above the file's ${formatHrs(next)}. Import the last ` +
            'state the key signed (at or above that); if the lower state is right, use --force and then ' +
            'cometkms state reset-high-water on each node',
        );
      }
    }
    if (!(await fromEtcd(cluster, swapEtcdSignState(client, prefix, o.chain, record, next)))) {
      throw new Error(
        `the sign state of chain ${o.chain} in etcd (${key}) changed during import (a node signed ` +
          'meanwhile); nothing was imported. Run the import again',
      );
    }
    const before = current.state === undefined ? current.why : formatHrs(current.state);
    if (o.force && current.state !== undefined && compareHRS(next, current.state) < 0) {
      process.stderr.write(
        'the state moved backwards: every node that saw a higher state refuses to sign this chain until ' +
          'its high-water mark is reset (cometkms state reset-high-water, on each node, stopped)\n',
      );
    }
    process.stdout.write(
      o.force
        ? `chain ${o.chain}: sign state in etcd key ${key} FORCED to height/round/step ${formatHrs(next)} (was ${before})\n`
        : `chain ${o.chain}: sign state in etcd key ${key} set to height/round/step ${formatHrs(next)} (was ${before})\n`,
    );
  });
}

/** The state a record holds; an unreadable one only with `force` (like the file store). */
function readableState(
  record: EtcdStateRecord | undefined,
  force: boolean,
): { state: SignState; why?: undefined } | { state: undefined; why: string } {
  if (record === undefined) return { state: undefined, why: 'no state in etcd' };
  try {
    return { state: decodeSignState(record.value, record.key) };
  } catch (err) {
    if (!force) {
      throw new Error(
        `${(err as Error).message}; nothing was imported. Establish the last state the key signed and ` +
          'import it with --force',
      );
    }
    return { state: undefined, why: `unusable (${(err as Error).message})` };
  }
}

/**
 * `state reset-high-water` (cluster, on a stopped node): accept etcd's current state of the chain
 * as this node's high-water mark, even below it. The deliberate, per-node way to go lower after
 * `state import --force` of a lower state; every node refuses the lower state until its own
 * mark is reset, so one mistaken command cannot lower the whole cluster.
 */
async function resetHighWater(o: Common & { yes?: boolean }): Promise<void> {
  const config = await prepare(o);
  const cluster = config.cluster;
  if (cluster === undefined) {
    throw new Error(
      'state reset-high-water is for cluster nodes; a single node keeps its state log and its seal ' +
        'together (use state import --force)',
    );
  }
  if (!o.yes) {
    throw new Error(
      `resetting the high-water mark lets this node sign chain ${o.chain} from a LOWER state than it has seen; ` +
        'make sure that state is the last one the key signed, then run again with --yes',
    );
  }
  await assertHomeInitialised(config.node.home);
  // The node must be stopped: its own mark must not move under it.
  const lock = await acquireHomeLock(config.node.home);
  try {
    const before = readHighWater(config.node.home, o.chain);
    const state = await readState(config, o.chain);
    if (state === undefined) {
      throw new Error(
        `etcd has no sign state for chain ${o.chain} (${stateKey(cluster, o.chain)}): import the last signed ` +
          'state first (cometkms state import), then reset',
      );
    }
    writeHighWaterFile(config.node.home, o.chain, state);
    process.stdout.write(
      `chain ${o.chain}: this node's high-water mark set to ${formatHrs(state)} (was ${
        before === undefined ? 'none' : formatHrs(before)
      })\n`,
    );
  } finally {
    await lock.release();
  }
}

/** Adds `--config` and `--chain` (with `--chain-id` as an alias) to a state subcommand. */
function chainCommand(parent: Command, name: string, description: string): Command {
  return parent
    .command(name)
    .description(description)
    .requiredOption('--config <file>', 'config.toml')
    .option('--chain <id>', 'chain id (required)')
    .option('--chain-id <id>', 'the same as --chain');
}

/** Adds `cometkms state init|show|export|import|reset-high-water`. */
export function registerState(program: Command): void {
  const state = program
    .command('state')
    .description(
      'create, show or seed the sign state of a chain (from / to a priv_validator_state.json); ' +
        'a chain signs only from a state these commands created',
    );
  chainCommand(
    state,
    'init',
    'create the state of a chain this key has NEVER signed on, at its current height (single node: stop it first; ' +
      'with [cluster]: written to etcd once, from any node)',
  )
    .option('--height <h>', "the chain's current height: max_height_jump counts from it", '0')
    .action((o: ChainOptions & { height: string }, cmd: Command) =>
      initState({ ...o, ...chainOf(o, cmd) }, cmd),
    );
  chainCommand(
    state,
    'show',
    'print the last reserved/signed state of a chain (works next to running nodes; with [cluster], read from etcd)',
  )
    .option('--json', 'print JSON (height as a string)')
    .action((o: ChainOptions & { json?: boolean }, cmd: Command) => show({ ...o, ...chainOf(o, cmd) }));
  chainCommand(
    state,
    'export',
    'write the state as a CometBFT priv_validator_state.json (extension sign bytes are not part of it)',
  )
    .option('--out <file>', 'file to create (never overwritten); default: stdout')
    .action((o: ChainOptions & { out?: string }, cmd: Command) => exportState({ ...o, ...chainOf(o, cmd) }));
  chainCommand(
    state,
    'import',
    'seed the state from a CometBFT priv_validator_state.json, creating it if the chain has none ' +
      '(single node: stop it first; with [cluster]: written to etcd, safe with nodes running)',
  )
    .requiredOption('--from <file>', 'priv_validator_state.json to import')
    .option('--force', 'replace the state even if it moves backwards or is unreadable (double-sign risk!)')
    .action((o: ChainOptions & { from: string; force?: boolean }, cmd: Command) =>
      importState({ ...o, ...chainOf(o, cmd) }),
    );
  chainCommand(
    state,
    'reset-high-water',
    "cluster, on a stopped node: accept etcd's current state as this node's high-water mark, even if lower " +
      '(after a deliberate state import --force of a lower state)',
  )
    .option('--yes', 'confirm: this node may then sign from the lower state')
    .action((o: ChainOptions & { yes?: boolean }, cmd: Command) =>
      resetHighWater({ ...o, ...chainOf(o, cmd) }),
    );
}
