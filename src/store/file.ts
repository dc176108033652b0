/**
 * The single-node sign-state store: one state file per chain under `<home>/state/`, guarded by
 * an exclusive lock on the home.
 *
 * Every write produces a new generation and is made durable in two steps, each atomic on its
 * own (temp → fsync → rename → fsync(dir), see durable.ts):
 *
 *   1. `<name>.json`  the state file: generation g+1, HRS, sign bytes, signature, checksum
 *   2. `<name>.hwm`   the high-water record: generation g+1, HRS, checksum of that state file
 *
 * and a write resolves only after both. The high-water record exists to catch a state file
 * that went backwards (a restored backup, a copy from another machine). Why the state file goes
 * FIRST: after a crash between the two steps the pair is (state g+1, record g). The state file
 * then holds the higher HRS, so accepting it and repairing the record can never move the HRS
 * down. With the opposite order a crash would leave (record g+1, state g), which looks exactly
 * like a state file restored from a backup taken one write earlier: the only safe reading is
 * "backwards, stop", which would turn every badly timed crash into an operator call, and the
 * lenient reading would accept a stale state whose next HRS may already have been signed.
 *
 * So on reading, with s = state generation and r = record generation:
 *   s = r      consistent if the record's checksum is the state file's checksum;
 *   s = r + 1  an interrupted write: accepted only if the state's HRS is not below the record's,
 *              and the record is rewritten;
 *   s < r      the state file is older than expected → error, never a new baseline;
 *   s > r + 1  the record went backwards or was replaced → error.
 * No state file and no record is the initial state; one without the other (except a state file
 * of generation 1, the first write interrupted) is an error. Restoring BOTH files of a chain
 * from the same backup cannot be detected by any local scheme; operators must not do that.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { bytesEqual } from '../cometbft/bytes.ts';
import { compareHRS, type HRS } from '../cometbft/types.ts';
import { readFileIfExists, writeFileDurable } from './durable.ts';
import { acquireHomeLock, type HomeLock } from './lock.ts';
import {
  decodeHwmFile,
  decodeStateFile,
  encodeHwmFile,
  encodeStateFile,
  formatHrs,
  type HighWaterMark,
  StateStoreError,
  type StoredState,
  stateChecksum,
} from './state-codec.ts';
import {
  copySignState,
  initialSignState,
  type ReserveResult,
  type SignState,
  type SignStateStore,
  sameSignState,
} from './types.ts';

/** Directory of the state files inside a home. */
export const STATE_DIR = 'state';

/**
 * The file stem of a chain's files: the chain id with every character outside [A-Za-z0-9_-]
 * replaced (chain ids may contain `/`, `..`, spaces, …), plus a hash of the exact id so that two
 * ids that sanitise alike never share a file.
 */
export function chainFileStem(chainId: string): string {
  const safe = chainId.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64);
  const hash = createHash('sha256').update(chainId, 'utf8').digest('hex').slice(0, 16);
  return `${safe}-${hash}`;
}

/** Paths of a chain's state file and high-water record. */
export function chainFiles(home: string, chainId: string): { state: string; hwm: string } {
  const stem = join(home, STATE_DIR, chainFileStem(chainId));
  return { state: `${stem}.json`, hwm: `${stem}.hwm` };
}

interface RawFiles {
  state?: string;
  hwm?: string;
}

interface Validated {
  stored: StoredState;
  /** the state file is one write ahead of its record (an interrupted write): rewrite the record */
  repairHwm: boolean;
}

function remedy(chainId: string): string {
  return (
    'Signing for this chain stays stopped. Find out the last state the validator may have signed ' +
    'and, with cometkms stopped, seed it from a trusted priv_validator_state.json: ' +
    `cometkms state import --config <config.toml> --chain-id ${JSON.stringify(chainId)} --from <file> --force`
  );
}

function storeError(file: string, chainId: string, what: string): StateStoreError {
  return new StateStoreError(
    `sign state ${file} (chain ${JSON.stringify(chainId)}): ${what}. ${remedy(chainId)}`,
  );
}

function describe(g: bigint, hrs: HRS): string {
  return `generation ${g}, height/round/step ${formatHrs(hrs)}`;
}

/** Reads the record before the state file, so a concurrent writer can only make the state look newer. */
async function readRaw(home: string, chainId: string): Promise<RawFiles> {
  const files = chainFiles(home, chainId);
  const hwm = await readFileIfExists(files.hwm);
  const state = await readFileIfExists(files.state);
  return { state, hwm };
}

/** Applies the consistency rules of the module comment to the raw files of one chain. */
function validate(home: string, chainId: string, raw: RawFiles): Validated {
  const files = chainFiles(home, chainId);
  const decode = <T>(file: string, text: string, fn: (t: string) => T): T => {
    try {
      return fn(text);
    } catch (err) {
      throw storeError(file, chainId, `unreadable: ${(err as Error).message}`);
    }
  };
  const hwm = raw.hwm === undefined ? undefined : decode(files.hwm, raw.hwm, decodeHwmFile);
  const stored = raw.state === undefined ? undefined : decode(files.state, raw.state, decodeStateFile);
  if (hwm && hwm.chainId !== chainId) {
    throw storeError(files.hwm, chainId, `belongs to chain ${JSON.stringify(hwm.chainId)}`);
  }
  if (stored && stored.chainId !== chainId) {
    throw storeError(files.state, chainId, `belongs to chain ${JSON.stringify(stored.chainId)}`);
  }
  if (!stored) {
    if (!hwm) return { stored: { chainId, generation: 0n, state: initialSignState() }, repairHwm: false };
    throw storeError(
      files.state,
      chainId,
      `missing, but its high-water record ${files.hwm} says ${describe(hwm.generation, hwm)} was written (deleted or lost state file)`,
    );
  }
  const s = stored.generation;
  if (!hwm) {
    if (s === 1n) return { stored, repairHwm: true };
    throw storeError(files.hwm, chainId, `missing, but the state file is at ${describe(s, stored.state)}`);
  }
  const r = hwm.generation;
  if (s === r) {
    if (hwm.stateChecksum === stateChecksum(stored)) return { stored, repairHwm: false };
    throw storeError(
      files.state,
      chainId,
      `does not match its high-water record ${files.hwm} at generation ${r} (replaced file?)`,
    );
  }
  if (s === r + 1n) {
    if (compareHRS(stored.state, hwm) >= 0) return { stored, repairHwm: true };
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

/**
 * Reads and verifies one chain's state without taking the home lock (for `state show|export`
 * next to a running node). A verification failure is retried while the files keep changing (a
 * writer between its two steps); the same failure on unchanged files is real and is thrown.
 */
export async function readChainState(home: string, chainId: string): Promise<SignState> {
  let previous: RawFiles | undefined;
  for (let attempt = 0; ; attempt++) {
    const raw = await readRaw(home, chainId);
    try {
      return validate(home, chainId, raw).stored.state;
    } catch (err) {
      const unchanged = previous && previous.state === raw.state && previous.hwm === raw.hwm;
      if (unchanged || attempt >= 10) throw err;
      previous = raw;
    }
  }
}

/** The file-backed SignStateStore (single-node mode). */
export class FileSignStateStore implements SignStateStore {
  /** verified current state per chain; this process is the only writer (home lock) */
  private readonly cache = new Map<string, StoredState>();
  /** chains whose cached state holds a recorded signature not yet written to disk */
  private readonly unwritten = new Set<string>();
  /** tail of the per-chain write queue */
  private readonly tails = new Map<string, Promise<void>>();
  /** {@link close} once it has begun: from then on no call may join the queues */
  private closing: Promise<void> | undefined;
  private closed = false;

  private constructor(
    readonly home: string,
    private readonly lock: HomeLock,
  ) {}

  /**
   * Locks `home` and verifies the state of every chain in `chainIds` (so a bad state stops the
   * node at startup, not at the first vote). Throws StateStoreError on any inconsistency, or
   * an Error if another process holds the home.
   */
  static async open(home: string, opts: { chainIds?: string[] } = {}): Promise<FileSignStateStore> {
    const dir = join(home, STATE_DIR);
    const isDir = await stat(dir).then(
      (st) => st.isDirectory(),
      () => false,
    );
    if (!isDir) {
      throw new StateStoreError(
        `state directory ${dir} does not exist: run \`cometkms init --home ${home}\` first`,
      );
    }
    const lock = await acquireHomeLock(home);
    const store = new FileSignStateStore(home, lock);
    try {
      for (const chainId of opts.chainIds ?? []) await store.load(chainId);
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  async load(chainId: string): Promise<SignState> {
    return this.exclusive(chainId, async () => copySignState((await this.current(chainId)).state));
  }

  async reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult> {
    return this.exclusive(chainId, async () => {
      const cur = await this.current(chainId);
      if (!sameSignState(cur.state, expected)) return { ok: false, current: copySignState(cur.state) };
      await this.write(chainId, cur.generation, next);
      return { ok: true };
    });
  }

  /**
   * Keeps the signature in memory and writes it with the chain's next durable write (the next
   * reservation, or {@link close}). Recording is bookkeeping, not protection: the reservation of
   * exactly these sign bytes is already durable, so after a crash that loses the signature the
   * guard finds a reservation without one and re-signs the same reserved bytes. Not paying two
   * more fsyncs here halves the cost of a signature on the hot path.
   */
  async recordSignature(
    chainId: string,
    hrs: HRS,
    signBytes: Uint8Array,
    signature: Uint8Array,
  ): Promise<void> {
    await this.exclusive(chainId, async () => {
      const cur = await this.current(chainId);
      if (compareHRS(cur.state, hrs) !== 0 || !bytesEqual(cur.state.signBytes, signBytes)) return;
      if (bytesEqual(cur.state.signature, signature)) return;
      this.cache.set(chainId, { ...cur, state: { ...cur.state, signature: signature.slice() } });
      this.unwritten.add(chainId);
    });
  }

  /**
   * Overwrites a chain's state whatever it is now, even if its files are unreadable or
   * inconsistent. This exists only for `cometkms state import --force`: the operator's way out
   * after the store refused a state (restored backup, damaged file) and they have established
   * the true last signed state elsewhere. The new generation is above every readable one, so
   * the pair written is consistent. Nothing in the signing path may call this.
   */
  async forceWrite(chainId: string, state: SignState): Promise<void> {
    await this.exclusive(chainId, async () => {
      this.assertOpen();
      const raw = await readRaw(this.home, chainId);
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
          // unreadable: it is being replaced, its generation does not matter
        }
      }
      await this.write(chainId, generation, state);
    });
  }

  /**
   * Lets the calls already queued finish, writes the signatures still only in memory, then
   * releases the home lock. A call made once closing has begun is refused at once: it would run
   * beside the writes below, and could resolve (a reservation reported durable) after the lock
   * is gone and another process may own the home.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    // Nothing joins a queue any more, so these tails are the last ones.
    await Promise.all([...this.tails.values()]);
    try {
      for (const chainId of this.unwritten) {
        const cached = this.cache.get(chainId);
        if (cached) await this.write(chainId, cached.generation, cached.state);
      }
    } finally {
      this.closed = true;
      await this.lock.release();
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new StateStoreError('sign-state store is closed');
  }

  /** The verified state of a chain: from the cache, else read from disk (repairing an interrupted write). */
  private async current(chainId: string): Promise<StoredState> {
    this.assertOpen();
    const cached = this.cache.get(chainId);
    if (cached) return cached;
    const { stored, repairHwm } = validate(this.home, chainId, await readRaw(this.home, chainId));
    if (repairHwm) await writeFileDurable(chainFiles(this.home, chainId).hwm, encodeHwmFile(hwmOf(stored)));
    this.cache.set(chainId, stored);
    return stored;
  }

  /** Durably writes `state` as generation `after + 1`, state file first (see the module comment). */
  private async write(chainId: string, after: bigint, state: SignState): Promise<void> {
    const stored: StoredState = { chainId, generation: after + 1n, state: copySignState(state) };
    const files = chainFiles(this.home, chainId);
    // Until both steps are done the disk is the truth: a failed write leaves the cache empty, so
    // the next call re-reads and re-verifies whatever made it to disk.
    this.cache.delete(chainId);
    await writeFileDurable(files.state, encodeStateFile(stored));
    await writeFileDurable(files.hwm, encodeHwmFile(hwmOf(stored)));
    this.cache.set(chainId, stored);
    this.unwritten.delete(chainId);
  }

  /** Runs `fn` after every earlier call for the same chain has finished (writes never interleave). */
  private async exclusive<T>(chainId: string, fn: () => Promise<T>): Promise<T> {
    if (this.closing !== undefined) throw new StateStoreError('sign-state store is closed');
    const prev = this.tails.get(chainId) ?? Promise.resolve();
    let done!: () => void;
    const gate = new Promise<void>((resolve) => {
      done = resolve;
    });
    const tail = prev.then(() => gate);
    this.tails.set(chainId, tail);
    await prev;
    try {
      return await fn();
    } finally {
      done();
      if (this.tails.get(chainId) === tail) this.tails.delete(chainId);
    }
  }
}

function hwmOf(stored: StoredState): HighWaterMark {
  return {
    chainId: stored.chainId,
    generation: stored.generation,
    height: stored.state.height,
    round: stored.state.round,
    step: stored.state.step,
    stateChecksum: stateChecksum(stored),
  };
}
