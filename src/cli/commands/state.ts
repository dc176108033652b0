/**
 * `cometkms state show|export|import`: read the sign state of a chain, or seed it from / to a
 * CometBFT `priv_validator_state.json` (e.g. when migrating a validator to or from the KMS).
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { formatPrivValidatorState, parsePrivValidatorState } from '../../cometbft/privval-files.ts';
import { assertHomeInitialised } from '../../config/home.ts';
import { loadConfig } from '../../config/load.ts';
import type { Config } from '../../config/types.ts';
import { FileSignStateStore, readChainState } from '../../store/file.ts';
import { compareHrs, formatHrs } from '../../store/state-codec.ts';
import type { SignState } from '../../store/types.ts';

interface Common {
  config: string;
  chainId: string;
}

const STEP_NAMES = ['none', 'propose', 'prevote', 'precommit'];

/** The config and home of a state command; the chain must be one the config signs for. */
async function prepare(o: Common): Promise<Config> {
  const config = await loadConfig(o.config);
  if (!config.chains.some((c) => c.id === o.chainId)) {
    const known = config.chains.map((c) => JSON.stringify(c.id)).join(', ');
    throw new Error(`chain ${JSON.stringify(o.chainId)} is not in ${config.path} (chains: ${known})`);
  }
  await assertHomeInitialised(config.node.home);
  return config;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function describeState(chainId: string, s: SignState): string {
  const bytes = (b: Uint8Array) => (b.length === 0 ? '(none)' : `${b.length} bytes ${hex(b)}`);
  return [
    `chain:                ${chainId}`,
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
  const s = await readChainState(config.node.home, o.chainId);
  if (!o.json) {
    process.stdout.write(describeState(o.chainId, s));
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
  const s = await readChainState(config.node.home, o.chainId);
  const text = formatPrivValidatorState({
    height: s.height,
    round: s.round,
    step: s.step,
    signature: s.signature,
    signBytes: s.signBytes,
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
  const cmp = compareHrs(next, current);
  if (cmp < 0) return 'it would move the height/round/step backwards';
  if (cmp === 0 && current.signBytes.length > 0 && hex(current.signBytes) !== hex(next.signBytes)) {
    return 'it has the same height/round/step with different sign bytes';
  }
  return undefined;
}

async function importState(o: Common & { from: string; force?: boolean }): Promise<void> {
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
    if (why) {
      throw new Error(
        `refusing to import ${o.from} for chain ${o.chainId}: ${why} (stored ${formatHrs(current)}, file ` +
          `${formatHrs(next)}). Signing from an older state risks a double sign. If you are certain the file ` +
          'holds the latest state the key ever signed, run again with --force',
      );
    }
    const sameBytes = compareHrs(next, current) === 0 && hex(current.signBytes) === hex(next.signBytes);
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

/** Adds `cometkms state show|export|import`. */
export function registerState(program: Command): void {
  const state = program
    .command('state')
    .description('show the sign state of a chain, or seed it from / to a priv_validator_state.json');
  state
    .command('show')
    .description('print the last reserved/signed state of a chain (works next to a running node)')
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
    .description('seed the state from a CometBFT priv_validator_state.json (node must be stopped)')
    .requiredOption('--config <file>', 'config.toml')
    .requiredOption('--chain-id <id>', 'chain id')
    .requiredOption('--from <file>', 'priv_validator_state.json to import')
    .option('--force', 'replace the state even if it moves backwards or is unreadable (double-sign risk!)')
    .action(importState);
}
