/**
 * The 0.1 layout of the single-node store: per chain a JSON state file `<stem>.json` and a
 * high-water record `<stem>.hwm`, both checksummed and carrying a generation, written state
 * first (each by temp file → fsync → rename → fsync of the directory). The store reads it only
 * to migrate a home to the log (file.ts), under the same rules 0.1 read it by:
 *
 * - state generation s, record generation r: s = r with matching checksums is consistent;
 *   s = r + 1 at the same or a higher height/round/step is an interrupted write, the state wins;
 * - s < r is a restored backup of the state file, s > r + 1 a restored record: errors;
 * - a state file without a record is the first write interrupted (s = 1), else an error; a record
 *   without a state file is a deleted state: an error;
 * - a file of another chain, or one that does not decode, is an error.
 */
import { compareHRS, type HRS } from '../cometbft/types.ts';
import { readFileIfExists } from './durable.ts';
import { StateStoreError } from './errors.ts';
import { chainStatePath } from './paths.ts';
import {
  decodeHwmFile,
  decodeStateFile,
  formatHrs,
  type HighWaterMark,
  type StoredState,
  stateChecksum,
} from './state-codec.ts';

/** Paths of a chain's 0.1 state file and high-water record. */
export function legacyChainFiles(home: string, chainId: string): { state: string; hwm: string } {
  return { state: chainStatePath(home, chainId, '.json'), hwm: chainStatePath(home, chainId, '.hwm') };
}

/** The raw text of a chain's two 0.1 files (undefined: absent). */
export interface LegacyRaw {
  state?: string;
  hwm?: string;
}

/** The operator's way out of an unusable state, for every store error. */
export function stateRecoveryRemedy(chainId: string): string {
  return (
    'Signing for this chain stays stopped. Find out the last state the validator may have signed ' +
    'and, with cometkms stopped, seed it from a trusted priv_validator_state.json: ' +
    `cometkms state import --config <config.toml> --chain ${JSON.stringify(chainId)} --from <file> --force`
  );
}

function storeError(file: string, chainId: string, what: string): StateStoreError {
  return new StateStoreError(
    `sign state ${file} (chain ${JSON.stringify(chainId)}): ${what}. ${stateRecoveryRemedy(chainId)}`,
  );
}

function describe(g: bigint, hrs: HRS): string {
  return `generation ${g}, height/round/step ${formatHrs(hrs)}`;
}

/** Reads the record before the state file, so a concurrent 0.1 writer could only make the state look newer. */
export async function readLegacyRaw(home: string, chainId: string): Promise<LegacyRaw> {
  const files = legacyChainFiles(home, chainId);
  const hwm = await readFileIfExists(files.hwm);
  const state = await readFileIfExists(files.state);
  return { state, hwm };
}

/**
 * The state a chain's 0.1 files hold (undefined: neither file exists), checked by the rules of
 * the module comment; throws StateStoreError naming the file and the remedy.
 */
export function validateLegacy(home: string, chainId: string, raw: LegacyRaw): StoredState | undefined {
  const files = legacyChainFiles(home, chainId);
  const decode = <T>(file: string, text: string, fn: (t: string) => T): T => {
    try {
      return fn(text);
    } catch (err) {
      throw storeError(file, chainId, `unreadable: ${(err as Error).message}`);
    }
  };
  const hwm: HighWaterMark | undefined =
    raw.hwm === undefined ? undefined : decode(files.hwm, raw.hwm, decodeHwmFile);
  const stored = raw.state === undefined ? undefined : decode(files.state, raw.state, decodeStateFile);
  if (hwm && hwm.chainId !== chainId) {
    throw storeError(files.hwm, chainId, `belongs to chain ${JSON.stringify(hwm.chainId)}`);
  }
  if (stored && stored.chainId !== chainId) {
    throw storeError(files.state, chainId, `belongs to chain ${JSON.stringify(stored.chainId)}`);
  }
  if (!stored) {
    if (!hwm) return undefined;
    throw storeError(
      files.state,
      chainId,
      `missing, but its high-water record ${files.hwm} says ${describe(hwm.generation, hwm)} was written (deleted or lost state file)`,
    );
  }
  const s = stored.generation;
  if (!hwm) {
    if (s === 1n) return stored;
    throw storeError(files.hwm, chainId, `missing, but the state file is at ${describe(s, stored.state)}`);
  }
  const r = hwm.generation;
  if (s === r) {
    if (hwm.stateChecksum === stateChecksum(stored)) return stored;
    throw storeError(
      files.state,
      chainId,
      `does not match its high-water record ${files.hwm} at generation ${r} (replaced file?)`,
    );
  }
  if (s === r + 1n) {
    if (compareHRS(stored.state, hwm) >= 0) return stored;
    // only an interrupted forced write (state import --force) moves the HRS down: redo it
    throw storeError(
      files.state,
      chainId,
      `is one write ahead of its high-water record ${files.hwm} but at a lower height/round/step ` +
        `(${describe(s, stored.state)} vs ${describe(r, hwm)}): an interrupted forced import?`,
    );
  }
  if (s < r) {
    throw storeError(
      files.state,
      chainId,
      `is older than expected: it is at ${describe(s, stored.state)} but the high-water record ` +
        `${files.hwm} says ${describe(r, hwm)} was written (restored backup?)`,
    );
  }
  throw storeError(
    files.hwm,
    chainId,
    `is behind its state file: record at ${describe(r, hwm)}, state at ${describe(s, stored.state)} (restored or replaced record?)`,
  );
}

/** The highest generation either 0.1 file names, whatever else is wrong with them (0: none readable). */
export function legacyGeneration(raw: LegacyRaw): bigint {
  let generation = 0n;
  for (const [text, decode] of [
    [raw.state, (t: string) => decodeStateFile(t).generation],
    [raw.hwm, (t: string) => decodeHwmFile(t).generation],
  ] as const) {
    if (text === undefined) continue;
    try {
      const g = decode(text);
      if (g > generation) generation = g;
    } catch {
      // unreadable: it does not count
    }
  }
  return generation;
}
