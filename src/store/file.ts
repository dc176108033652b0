import { type BigIntStats, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { bytesEqual } from '../cometbft/bytes.ts';
import { compareHRS, type HRS } from '../cometbft/types.ts';
import { readFileIfExists, writeFileDurable } from './durable.ts';
import { StateMissingError, StateStoreError, stateRemedy } from './errors.ts';
import { acquireHomeLock, type HomeLock } from './lock.ts';
import { chainStatePath, STATE_DIR } from './paths.ts';
import {
  decodeHwmFile,
  decodeStateFile,
  encodeHwmFile,
  encodeStateFile,
  formatHrs,
  type HighWaterMark,
  type StoredState,
  stateChecksum,
} from './state-codec.ts';
import {
  copySignState,
  type Reservation,
  type ReserveResult,
  type SignState,
  type SignStateStore,
  sameSignState,
} from './types.ts';

export { STATE_DIR };

/** Paths of a chain's state file and high-water record. */
export function chainFiles(home: string, chainId: string): { state: string; hwm: string } {
  return { state: chainStatePath(home, chainId, '.json'), hwm: chainStatePath(home, chainId, '.hwm') };
}

interface RawFiles {
  state?: string;
  hwm?: string;
}

interface Validated {
  /** undefined: the chain has no state at all (neither file exists) */
  stored: StoredState | undefined;
  /** the state file is one write ahead of its record (an interrupted write): rewrite the record */
  repairHwm: boolean;
}

function remedy(chainId: string): string {
  return (
    'Signing for this chain stays stopped. Find out the last state the validator may have signed ' +
    'and, with cometkms stopped, seed it from a trusted priv_validator_state.json: ' +
    `cometkms state import --config <config.toml> --chain ${JSON.stringify(chainId)} --from <file> --force`
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
    if (!hwm) return { stored: undefined, repairHwm: false };
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
export async function readChainState(home: string, chainId: string): Promise<SignState | undefined> {
  let previous: RawFiles | undefined;
  for (let attempt = 0; ; attempt++) {
    const raw = await readRaw(home, chainId);
    try {
      return validate(home, chainId, raw).stored?.state;
    } catch (err) {
      const unchanged = previous && previous.state === raw.state && previous.hwm === raw.hwm;
      if (unchanged || attempt >= 10) throw err;
      previous = raw;
    }
  }
}

/** What identifies one version of a file on disk: a replaced or edited file changes it. */
interface FileStamp {
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
}

/** The stamp of `path`, or undefined when it does not exist. */
function stampOf(path: string): FileStamp | undefined {
  let st: BigIntStats | undefined;
  try {
    st = statSync(path, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return { ino: st.ino, size: st.size, mtimeNs: st.mtimeNs };
}

function sameStamp(a: FileStamp | undefined, b: FileStamp | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

/** A chain's verified state and the stamps of the two files that hold it. */
interface Known {
  stored: StoredState;
  stateFile: FileStamp | undefined;
  hwmFile: FileStamp | undefined;
}

/** The file-backed SignStateStore (single-node mode). */
export class FileSignStateStore implements SignStateStore {
  /** verified current state per chain; this process is the only writer (home lock) */
  private readonly cache = new Map<string, Known>();
  /** chains whose cached state holds a recorded signature not yet written to disk */
  private readonly unwritten = new Set<string>();
  /** chains whose files changed behind this store's back: refused until a restart re-verifies */
  private readonly tampered = new Map<string, string>();
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
   * Locks `home` and verifies the state of every chain in `chainIds` (so a bad or missing state
   * stops the node at startup, not at the first vote). Throws StateMissingError for a chain
   * without state, StateStoreError on any inconsistency, or an Error if another process holds
   * the home.
   */
  static async open(
    home: string,
    opts: { chainIds?: string[]; configPath?: string } = {},
  ): Promise<FileSignStateStore> {
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
      for (const chainId of opts.chainIds ?? []) {
        if ((await store.load(chainId)) === undefined) {
          throw new StateMissingError(
            `chain ${JSON.stringify(chainId)} has no sign state in ${dir}. A missing state is never ` +
              `read as "nothing signed yet": ${stateRemedy(chainId, opts.configPath)}`,
          );
        }
      }
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  async load(chainId: string): Promise<SignState | undefined> {
    return this.exclusive(chainId, async () => {
      const known = await this.current(chainId);
      return known === undefined ? undefined : copySignState(known.stored.state);
    });
  }

  async reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult> {
    return this.exclusive(chainId, async () => {
      const cur = await this.current(chainId);
      if (cur === undefined) throw this.missing(chainId);
      if (!sameSignState(cur.stored.state, expected)) {
        return { ok: false, current: copySignState(cur.stored.state) };
      }
      await this.write(chainId, cur, next);
      return { ok: true };
    });
  }

  /**
   * Records `signature` for `reserved`. Not durable (ed25519): kept in memory and written with the
   * chain's next durable write (the next reservation, or {@link close}); the reservation of
   * exactly these sign bytes is already durable, so after a crash that loses the signature the
   * guard finds a reservation without one and re-signs the same reserved bytes. Not paying
   * another fsync pair here halves the cost of a signature. Durable (secp256k1): written now.
   */
  async recordSignature(
    chainId: string,
    reserved: Reservation,
    signature: Uint8Array,
    opts: { durable: boolean },
  ): Promise<void> {
    await this.exclusive(chainId, async () => {
      const cur = await this.current(chainId);
      if (cur === undefined) throw this.missing(chainId);
      const state = cur.stored.state;
      if (compareHRS(state, reserved) !== 0 || !bytesEqual(state.signBytes, reserved.signBytes)) return;
      if (bytesEqual(state.signature, signature)) return;
      const signed = { ...state, signature: signature.slice() };
      if (opts.durable) {
        await this.write(chainId, cur, signed);
        return;
      }
      this.cache.set(chainId, { ...cur, stored: { ...cur.stored, state: signed } });
      this.unwritten.add(chainId);
    });
  }

  /** Both files are written before `reserve` resolves: nothing to wait for. */
  async readyToReturn(): Promise<void> {}

  /**
   * Creates the state of a chain that has none (`cometkms state init`, or `state import` of a
   * chain without state). Refuses when either of the chain's files exists, whatever it holds:
   * replacing a state is `forceWrite`'s job, behind the operator's --force.
   */
  async initialize(chainId: string, state: SignState): Promise<void> {
    await this.exclusive(chainId, async () => {
      this.assertOpen();
      const files = chainFiles(this.home, chainId);
      const raw = await readRaw(this.home, chainId);
      if (raw.state !== undefined || raw.hwm !== undefined) {
        throw new StateStoreError(
          `chain ${JSON.stringify(chainId)} already has sign state (${raw.state === undefined ? files.hwm : files.state}); ` +
            'nothing was created. Use cometkms state show to read it, or state import to move it forward',
        );
      }
      await this.write(chainId, undefined, state);
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
      this.tampered.delete(chainId);
      await this.writeGeneration(chainId, generation + 1n, state);
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
        const known = this.cache.get(chainId);
        if (known && !this.tampered.has(chainId)) await this.write(chainId, known, known.stored.state);
      }
    } finally {
      this.closed = true;
      await this.lock.release();
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('sign-state store is closed');
  }

  private missing(chainId: string): StateMissingError {
    return new StateMissingError(
      `chain ${JSON.stringify(chainId)} has no sign state in ${join(this.home, STATE_DIR)}: ${stateRemedy(chainId)}`,
    );
  }

  /**
   * The verified state of a chain (undefined: it has none): from the cache, else read from disk
   * (repairing an interrupted write).
   */
  private async current(chainId: string): Promise<Known | undefined> {
    this.assertOpen();
    const tampered = this.tampered.get(chainId);
    if (tampered !== undefined) throw new StateStoreError(tampered);
    const cached = this.cache.get(chainId);
    if (cached) return cached;
    const files = chainFiles(this.home, chainId);
    const { stored, repairHwm } = validate(this.home, chainId, await readRaw(this.home, chainId));
    if (stored === undefined) return undefined;
    if (repairHwm) await writeFileDurable(files.hwm, encodeHwmFile(hwmOf(stored)));
    const known = { stored, stateFile: stampOf(files.state), hwmFile: stampOf(files.hwm) };
    this.cache.set(chainId, known);
    return known;
  }

  /**
   * Durably writes `state` as the generation after `known`'s (the first one without it), once
   * both files are proven to be the ones `known` was read from or written as.
   */
  private async write(chainId: string, known: Known | undefined, state: SignState): Promise<void> {
    if (known !== undefined) this.assertUntouched(chainId, known);
    await this.writeGeneration(chainId, (known?.stored.generation ?? 0n) + 1n, state);
  }

  /**
   * Refuses (and remembers the refusal) if a file of the chain changed since this store last read
   * or wrote it: deleted, replaced by a copy or a restore, edited, or written by a second process
   * that got around the home lock. Overwriting it would hide that; reading it again here could
   * take a state this process never checked. A restart re-verifies the files from scratch.
   */
  private assertUntouched(chainId: string, known: Known): void {
    const files = chainFiles(this.home, chainId);
    const changed = [
      [files.state, known.stateFile],
      [files.hwm, known.hwmFile],
    ].filter(([path, stamp]) => !sameStamp(stampOf(path as string), stamp as FileStamp | undefined));
    if (changed.length === 0) return;
    const reason =
      `sign state of chain ${JSON.stringify(chainId)}: ${changed.map(([p]) => p).join(' and ')} changed ` +
      'behind this process (deleted, replaced or written by someone else). Signing for this chain is ' +
      'stopped: stop every process using this home, find out what happened, and restart (the files are ' +
      'verified again at start)';
    this.tampered.set(chainId, reason);
    this.cache.delete(chainId);
    throw new StateStoreError(reason);
  }

  /** Durably writes `state` as `generation`, state file first (see the module comment). */
  private async writeGeneration(chainId: string, generation: bigint, state: SignState): Promise<void> {
    const stored: StoredState = { chainId, generation, state: copySignState(state) };
    const files = chainFiles(this.home, chainId);
    // Until both steps are done the disk is the truth: a failed write leaves the cache empty, so
    // the next call re-reads and re-verifies whatever made it to disk.
    this.cache.delete(chainId);
    await writeFileDurable(files.state, encodeStateFile(stored));
    await writeFileDurable(files.hwm, encodeHwmFile(hwmOf(stored)));
    this.cache.set(chainId, { stored, stateFile: stampOf(files.state), hwmFile: stampOf(files.hwm) });
    this.unwritten.delete(chainId);
  }

  /** Runs `fn` after every earlier call for the same chain has finished (writes never interleave). */
  private async exclusive<T>(chainId: string, fn: () => Promise<T>): Promise<T> {
    if (this.closing !== undefined) throw new Error('sign-state store is closed');
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
